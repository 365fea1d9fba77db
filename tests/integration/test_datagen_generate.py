"""`alignlab data generate` against a loopback fake OpenAI-compatible server that injects 429 (with
Retry-After), 500, 400, timeouts and malformed bodies: the concurrency limit holds, every id ends once in
generated.jsonl or failures.jsonl, no canned text, usage and cost add up, and kill -9 resumes without a
second request for a finished id."""

from __future__ import annotations

import json
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from alignlab.config import load_config
from alignlab.datagen.generate import run_generate
from tests.conftest import ROOT, read_jsonl
from tests.integration.test_train_sft import ALIGNLAB

ID_IN_PROMPT = re.compile(r"\[(q\d+)\]")


@dataclass
class Scripted:
    """One response of the fake server: a JSON body (or raw bytes), a status and headers, or a hang
    until the client gives up."""

    status: int = 200
    body: dict | bytes | None = None
    headers: dict | None = None
    hang: bool = False
    delay: float = 0.0


def answer(text: str, prompt_tokens: int = 11, completion_tokens: int = 7, delay: float = 0.0) -> Scripted:
    return Scripted(body={"id": "x", "object": "chat.completion", "model": "fake",
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                       "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                    "total_tokens": prompt_tokens + completion_tokens}}, delay=delay)


def row_key(body: dict) -> str:
    """The row id the test wrote into the prompt (`[q17] ...`), else the last message."""
    text = body["messages"][-1]["content"]
    found = ID_IN_PROMPT.search(" ".join(m["content"] for m in body["messages"]))
    return found.group(1) if found else text


class QuietServer(ThreadingHTTPServer):
    """Threads per connection; a client that went away mid-answer (killed, timed out, cancelled) is expected."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeOpenAI:
    """A real HTTP server on 127.0.0.1 in a thread, answering /v1/chat/completions as `script(body, n)` says
    (n: how many requests for the same row key came before). It counts the requests in flight and the
    most at once, logs (key, time, body) of every request, and sums the `usage` it sends."""

    def __init__(self, script, key=row_key):
        self.script, self.key = script, key
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self.log: list[tuple[str, float, dict]] = []
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0}
        self.hanging: set[socket.socket] = set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                reply = fake.arrive(body)
                if reply.hang:
                    fake.hang(self.connection)
                    self.close_connection = True
                    return
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body or {}).encode()
                fake.leave(reply)  # before the last byte: the client cannot send its next request earlier
                self.send_response(reply.status)
                for name, value in (reply.headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def _settle(self) -> None:
        """Stop counting hung requests whose client has closed the connection (under the lock)."""
        for sock in list(self.hanging):
            try:
                closed = bool(select.select([sock], [], [], 0)[0]) and sock.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                closed = True
            if closed:
                self.hanging.discard(sock)
                self.in_flight -= 1

    def arrive(self, body: dict) -> Scripted:
        with self.lock:
            self._settle()  # a client that gave up closed its connection before sending anything new
            key = self.key(body)
            n = sum(k == key for k, _, _ in self.log)
            self.log.append((key, time.monotonic(), body))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return self.script(body, n)

    def leave(self, reply: Scripted) -> None:
        with self.lock:
            self.in_flight -= 1
            if reply.status == 200 and isinstance(reply.body, dict) and "usage" in reply.body:
                for key in self.usage:
                    self.usage[key] += reply.body["usage"][key]

    def hang(self, sock: socket.socket) -> None:
        with self.lock:
            self.hanging.add(sock)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            select.select([sock], [], [], 0.01)
            with self.lock:
                self._settle()
                if sock not in self.hanging:
                    return

    def requests_for(self, key: str) -> list[float]:
        with self.lock:
            return [t for k, t, _ in self.log if k == key]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def write_prompts(folder, n: int, name: str = "prompts") -> None:
    """An alpaca prompt dataset of n rows with ids q0..q{n-1}, registered in folder/dataset_info.json."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"q{i}", "instruction": f"[q{i}] 宝宝{60 + i}cm 穿什么码？", "input": "", "system": "你是童装导购。"}
            for i in range(n)]
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    info_path = folder / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info[name] = {"file_name": f"{name}.jsonl"}
    info_path.write_text(json.dumps(info))


def faulty(body: dict, n: int) -> Scripted:
    """Row q{i} by i % 8: 0 ok; 1 429 + Retry-After once; 2 500 once; 3 500 always; 4 hang once;
    5 malformed body once; 6 400 always; 7 hang always."""
    key = row_key(body)
    kind = int(key[1:]) % 8
    if kind == 1 and n == 0:
        return Scripted(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})
    if (kind == 2 and n == 0) or kind == 3:
        return Scripted(500, {"error": {"message": "boom"}})
    if (kind == 4 and n == 0) or kind == 7:
        return Scripted(hang=True)
    if kind == 5 and n == 0:
        return Scripted(200, b'{"choices": [{"message": ')
    if kind == 6:
        return Scripted(400, {"error": {"message": "prompt too long"}})
    return answer(f"answer for {key}", prompt_tokens=10 + int(key[1:]), completion_tokens=3 + n, delay=0.05)


def gen_args(data, out, url, *extra):
    return [f"dataset_dir={data}", "dataset=prompts", f"output_dir={out}", f"api_base={url}", "api_model=fake",
            "api_key_env=ALIGNLAB_FAKE_KEY", *extra]


def test_faults_limit_failures_usage_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_FAKE_KEY", "sk-fake")
    data, out = tmp_path / "data", tmp_path / "out"
    write_prompts(data, 24)
    ids = {f"q{i}" for i in range(24)}
    args = gen_args(data, out, "URL", "max_concurrency=3", "request_timeout=0.3", "max_retries=2",
                    "retry_backoff=0.01", 'api_prices={"fake": {"input": 1.5, "output": 4.0}}', "register_as=answers")
    with FakeOpenAI(faulty) as fake:
        args = [a.replace("URL", fake.url) for a in args]
        summary = run_generate(load_config(args))
        generated, failures = read_jsonl(out / "generated.jsonl"), read_jsonl(out / "failures.jsonl")

        assert fake.max_in_flight <= 3  # the server's own count of concurrent requests
        assert fake.max_in_flight >= 2
        done = [r["id"] for r in generated]
        failed = {r["id"]: r["reason"] for r in failures}
        assert len(done) == len(set(done)) and len(failed) == len(failures)
        assert set(done) | set(failed) == ids and not set(done) & set(failed)  # each id once, in one file
        for r in generated:  # the server's answer, never anything else
            assert r["output"] == f"answer for {r['id']}" and r["instruction"].startswith(f"[{r['id']}]")
        assert {int(i[1:]) % 8 for i in failed} == {3, 6, 7}
        for i, reason in failed.items():
            expected = {3: "HTTP 500: boom", 6: "HTTP 400: prompt too long", 7: "timed out after 0.3s"}
            assert expected[int(i[1:]) % 8] in reason
        assert len(fake.requests_for("q6")) == 1  # a 400 is not retried
        assert len(fake.requests_for("q3")) == 3  # 1 + max_retries
        first, second = fake.requests_for("q1")
        assert second - first >= 0.95  # Retry-After: 1 honoured (a lower bound: load only lengthens it)

        assert summary["prompt_tokens"] == fake.usage["prompt_tokens"]
        assert summary["completion_tokens"] == fake.usage["completion_tokens"]
        assert summary["cost_usd"] == pytest.approx(
            (fake.usage["prompt_tokens"] * 1.5 + fake.usage["completion_tokens"] * 4.0) / 1e6)
        assert sum(r["usage"]["prompt_tokens"] for r in generated) == fake.usage["prompt_tokens"]
        assert json.loads((out / "summary.json").read_text())["failed"] == len(failed)

        before = len(fake.log)
        rerun = run_generate(load_config(args))  # only the failed rows are asked again
        asked_again = {k for k, _, _ in fake.log[before:]}
        assert asked_again == set(failed) and rerun["finished_before"] == len(done)
        assert [r["id"] for r in read_jsonl(out / "generated.jsonl")] == done
        assert sorted(r["id"] for r in read_jsonl(out / "failures.jsonl")) == sorted(failed)
    info = json.loads((data / "dataset_info.json").read_text())
    assert info["answers"]["columns"]["response"] == "output"


def finished_ids(path) -> set[str]:
    """Ids of the whole lines of a JSONL file (a torn last line is not finished)."""
    if not path.is_file():
        return set()
    text = path.read_text()
    return {json.loads(line)["id"] for line in text[: text.rfind("\n") + 1].splitlines() if line.strip()}


def test_kill_9_at_random_points_then_resume(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    write_prompts(data, 500)
    rng = random.Random(5)
    kill_at = sorted(rng.sample(range(40, 460), 2))
    with FakeOpenAI(lambda body, n: answer(f"answer for {row_key(body)}", delay=rng.uniform(0.005, 0.03))) as fake:
        command = [ALIGNLAB, "data", "generate", *gen_args(data, out, fake.url, "max_concurrency=6")]
        snapshots = []
        for threshold in kill_at:
            proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    env={**os.environ, "ALIGNLAB_FAKE_KEY": "k"})
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                if len(finished_ids(out / "generated.jsonl")) >= threshold:
                    break
                time.sleep(0.005)
            assert proc.poll() is None, "the run ended before the kill point"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            snapshots.append((len(fake.log), finished_ids(out / "generated.jsonl")))
        final = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "ALIGNLAB_FAKE_KEY": "k"})
        assert final.returncode == 0, final.stderr[-2000:]
        assert "resuming:" in final.stderr
        for mark, finished in snapshots:  # no request after a kill for an id finished before it
            assert not {k for k, _, _ in fake.log[mark:]} & finished
    ids = [r["id"] for r in read_jsonl(out / "generated.jsonl")]
    assert len(ids) == 500 and set(ids) == {f"q{i}" for i in range(500)}
    assert all(r["output"] == f"answer for {r['id']}" for r in read_jsonl(out / "generated.jsonl"))
    assert not (out / "failures.jsonl").read_text()


def test_refused_key_and_missing_keys_stop_with_one_line(tmp_path, capsys):
    from alignlab.cli import main

    data = tmp_path / "data"
    write_prompts(data, 5)
    with FakeOpenAI(lambda body, n: Scripted(401, {"error": {"message": "bad key"}})) as fake:
        assert main(["data", "generate", *gen_args(data, tmp_path / "out", fake.url)]) == 1
        assert len(fake.log) <= 2 * 8  # no retries of a refused key: at most one request per worker
    (err,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("alignlab data: ")]
    assert "HTTP 401 (the API key was refused)" in err
    assert "bad key" in err and "env ALIGNLAB_FAKE_KEY (`api_key_env`)" in err
    assert not read_jsonl(tmp_path / "out" / "generated.jsonl") and not read_jsonl(tmp_path / "out" / "failures.jsonl")
    assert main(["data", "generate", f"dataset_dir={data}", "dataset=prompts", f"output_dir={tmp_path}/o"]) == 1
    assert capsys.readouterr().err.strip().endswith("needs `api_base` (e.g. api_base=http://127.0.0.1:8000/v1 "
                                                    "api_model=NAME for `alignlab api`).")
