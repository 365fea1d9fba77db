"""The Chat tab's logic (no gradio): chat servers, one `alignlab api` subprocess per slot, and answers
streamed from several of them at once.

The web UI never loads weights itself. Load starts `python -m alignlab.webui.chat UI_PID alignlab api
CONFIG` on a free loopback port in its own session: this module's `__main__` is a small supervisor that
ends the server when the UI process is gone (even after a kill -9 of the UI), so a model's memory is
held only while the UI shows it loaded. Unload, and the UI's exit (atexit), send SIGTERM to the
server's process group and SIGKILL after a few seconds. Per slot, under `<runs root>/.webui/`:
`chat-<slot>.yaml` (the config served), `chat-<slot>.log` (its output) and, while it runs,
`chat-<slot>.json` (pid, port, url, API key; readable only by the user) for other local tools.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from ..files import write_atomic
from .jobs import pid_alive

SLOTS = ("A", "B")
STOP_GRACE_S = 5.0  # SIGTERM, then SIGKILL after this many seconds
LOAD_TIMEOUT_S = 900.0  # a large model on a CPU takes minutes


class ServerFailed(RuntimeError):
    """A chat server did not start or stopped; the message is the last error line of its log."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def last_error_line(log: Path, limit: int = 400) -> str:
    """The line of `log` that says why the process ended: its last non-empty line (a traceback's last
    line, or the CLI's one-line error)."""
    try:
        text = log.read_bytes()[-20_000:].decode("utf-8", errors="replace")
    except OSError:
        return f"(no log at {log})"
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    line = lines[-1] if lines else "(the log is empty)"
    return line if len(line) <= limit else line[:limit] + "…"


def _children() -> dict[int, list[int]]:
    """ppid -> pids of every process on this machine, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_rss(pid: int, include_self: bool = True) -> int:
    """Resident memory (bytes) of `pid` and all its descendants (without `pid` itself unless asked)."""
    tree, total, todo = _children(), 0, [pid]
    while todo:
        current = todo.pop()
        if current != pid or include_self:
            total += _rss_bytes(current)
        todo += tree.get(current, [])
    return total


@dataclass
class ChatServer:
    """One running `alignlab api` of a slot."""

    slot: str
    keys: dict  # the model keys served (model_name_or_path, adapter_name_or_path, template, ...)
    port: int
    api_key: str
    process: subprocess.Popen  # the supervisor; it leads the server's session and process group
    log: Path
    started: float = field(default_factory=time.time)
    ready: bool = False
    stopping: bool = False  # being unloaded: shown as such until its processes are reaped

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def model_name(self) -> str:
        return f"chat-{self.slot}"

    def healthy(self) -> bool:
        """/health answers (remembered once it has)."""
        if not self.ready and self.exit_code() is None:
            import httpx

            try:
                self.ready = httpx.get(self.url + "/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                pass
        return self.ready and self.exit_code() is None

    def exit_code(self) -> int | None:
        return self.process.poll()

    def rss_mb(self) -> float:
        return tree_rss(self.process.pid) / 2**20 if self.exit_code() is None else 0.0

    def stopped_error(self) -> str:
        return f"the server of {self.slot} stopped (exit status {self.exit_code()}): {last_error_line(self.log)}"


@dataclass
class SlotStatus:
    """What a slot's status line shows. state: empty, loading, ready, unloading, failed (did not start) or
    stopped."""

    slot: str
    state: str
    model: str = ""
    adapters: str = ""
    port: int | None = None
    rss_mb: float = 0.0
    seconds: float = 0.0  # loading for
    error: str = ""


class ChatServers:
    """The chat servers of one web UI, one per slot, shared by every page of it."""

    def __init__(self, folder: str | Path, load_timeout: float = LOAD_TIMEOUT_S):
        self.folder = Path(folder)  # <runs root>/.webui
        self.load_timeout = load_timeout
        self._servers: dict[str, ChatServer] = {}
        self._failed: dict[str, str] = {}
        self._lock = threading.Lock()
        for stale in self.folder.glob("chat-*.json"):  # left by a UI that was killed; its servers ended with it
            stale.unlink(missing_ok=True)
        atexit.register(self.unload_all)

    def get(self, slot: str) -> ChatServer | None:
        server = self._servers.get(slot)
        return None if server is None or server.stopping else server

    def start(self, slot: str, keys: dict) -> ChatServer:
        """Write the slot's config and start its server (the one there before is unloaded first); returns
        at once: `wait_ready` follows its loading."""
        if slot not in SLOTS:
            raise ValueError(f"unknown chat slot {slot!r}")
        self.unload(slot)
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / f"chat-{slot}.yaml"
        log = self.folder / f"chat-{slot}.log"
        write_atomic(config, yaml.safe_dump({"infer_backend": "huggingface", **keys}, sort_keys=False,
                                            allow_unicode=True))
        port, api_key = _free_port(), secrets.token_urlsafe(24)
        env = {**os.environ, "API_HOST": "127.0.0.1", "API_PORT": str(port), "API_KEY": api_key,
               "API_MODEL_NAME": f"chat-{slot}", "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "alignlab.webui.chat", str(os.getpid()),
                   sys.executable, "-m", "alignlab.cli", "api", str(config)]
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       env=env, start_new_session=True)
        server = ChatServer(slot, dict(keys), port, api_key, process, log)
        with self._lock:
            self._servers[slot] = server
            self._failed.pop(slot, None)
        info = {"slot": slot, "pid": process.pid, "port": port, "url": server.url + "/v1", "api_key": api_key,
                "model": server.model_name, "keys": server.keys, "log": str(log), "started": server.started}
        path = self.folder / f"chat-{slot}.json"
        write_atomic(path, json.dumps(info, indent=2, ensure_ascii=False))
        os.chmod(path, 0o600)
        return server

    def wait_ready(self, server: ChatServer, poll_s: float = 0.3) -> Iterator[float]:
        """Yields the seconds waited while `server` loads; returns once /health answers. A server that
        exits or does not answer within the load timeout raises ServerFailed (and is unloaded)."""
        while True:
            if self.get(server.slot) is not server:
                raise ServerFailed(f"{server.slot} was unloaded while it loaded")
            if server.exit_code() is not None:
                error = last_error_line(server.log)
                self._fail(server, error)
                raise ServerFailed(error)
            if server.healthy():
                return
            waited = time.time() - server.started
            if waited > self.load_timeout:
                error = f"no answer on {server.url}/health after {waited:.0f} s; last log line: " \
                        f"{last_error_line(server.log)}"
                self._fail(server, error)
                raise ServerFailed(error)
            yield waited
            time.sleep(poll_s)

    def load(self, slot: str, keys: dict) -> ChatServer:
        """`start` then wait until it answers (raises ServerFailed)."""
        server = self.start(slot, keys)
        for _ in self.wait_ready(server):
            pass
        return server

    def _fail(self, server: ChatServer, error: str) -> None:
        if self.unload(server.slot, server):
            self._failed[server.slot] = error

    def unload(self, slot: str, only: ChatServer | None = None) -> bool:
        """End the slot's server: SIGTERM to its process group, SIGKILL after STOP_GRACE_S; the processes
        are reaped before the slot reads as empty (it reads `unloading` meanwhile). `only`: unload only when
        that server is still the slot's. True when this call unloaded one."""
        with self._lock:
            server = self._servers.get(slot)
            if server is None or server.stopping or (only is not None and server is not only):
                return False
            server.stopping = True
            self._failed.pop(slot, None)
        (self.folder / f"chat-{slot}.json").unlink(missing_ok=True)
        stop_group(server.process)
        with self._lock:
            if self._servers.get(slot) is server:
                del self._servers[slot]
        return True

    def unload_all(self) -> None:
        for slot in list(self._servers):
            self.unload(slot)

    def status(self, slot: str) -> SlotStatus:
        server = self._servers.get(slot)
        if server is None:
            failed = self._failed.get(slot)
            return SlotStatus(slot, "failed", error=failed) if failed else SlotStatus(slot, "empty")
        keys = server.keys
        shown = SlotStatus(slot, "ready", keys.get("model_name_or_path", ""), keys.get("adapter_name_or_path", ""),
                           server.port)
        if server.stopping:
            return replace(shown, state="unloading")
        if server.exit_code() is not None:
            return replace(shown, state="stopped", error=server.stopped_error())
        if not server.healthy():
            return replace(shown, state="loading", seconds=time.time() - server.started)
        return replace(shown, rss_mb=server.rss_mb())


def stop_group(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> bool:
    """SIGTERM to the process group `process` leads, SIGKILL when it has not ended after `grace_s`;
    `process` is reaped. True when it was still running."""
    running = process.poll() is None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        if _wait_group_gone(process, grace_s):
            break
    process.wait()
    return running


def _wait_group_gone(process: subprocess.Popen, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        process.poll()  # reaps the supervisor; the server is reaped by it (or by init)
        if _group_gone(process.pid):
            return True
        time.sleep(0.05)
    return False


def _group_gone(pgid: int) -> bool:
    """No process of the group is left but zombies."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return all(_zombie(pid) for pid in _group_members(pgid))


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    members.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return members


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


# ---- conversations -------------------------------------------------------------------------------

@dataclass
class Sampling:
    """The request's sampling fields; the same for every column so that differences come from the models."""

    temperature: float
    top_p: float
    top_k: int  # 0: no top-k filter
    max_new_tokens: int
    seed: int | None
    enable_thinking: bool


@dataclass
class Turn:
    """One exchange of a column: the user's message and the model's reply as far as it has come."""

    user: str
    reasoning: str = ""
    answer: str = ""
    error: str = ""
    done: bool = False


def openai_messages(turns: list[Turn], system: str, prompt: str) -> list[dict]:
    """The request's messages: the system prompt, the answered turns (thinking left out, failed turns
    dropped so user and assistant alternate) and the new prompt."""
    messages = [{"role": "system", "content": system}] if system.strip() else []
    for turn in turns:
        if turn.done and not turn.error:
            messages += [{"role": "user", "content": turn.user}, {"role": "assistant", "content": turn.answer}]
    return messages + [{"role": "user", "content": prompt}]


def render(turns: list[Turn], thought_title: str, error_line: str = "⚠️ {error}") -> list[dict]:
    """A column's chatbot messages: per turn the user's message, the thinking as a thought (folded once
    the answer begins: status done), the answer and a clear line for an error."""
    shown: list[dict] = []
    for turn in turns:
        shown.append({"role": "user", "content": turn.user})
        if turn.reasoning:
            folded = bool(turn.answer or turn.done or turn.error)
            shown.append({"role": "assistant", "content": turn.reasoning,
                          "metadata": {"title": thought_title, "status": "done" if folded else "pending"}})
        if turn.answer:
            shown.append({"role": "assistant", "content": turn.answer})
        if turn.error:
            shown.append({"role": "assistant", "content": error_line.format(error=turn.error)})
    return shown


def _error_text(error: Exception) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return str(error) or type(error).__name__


def accumulate(chunks, turn: Turn) -> Iterator[Turn]:
    """The turn after each streamed chat-completion chunk (`reasoning_content` and `content` deltas)."""
    for chunk in chunks:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        reasoning = getattr(delta, "reasoning_content", None) or (delta.model_extra or {}).get("reasoning_content")
        if reasoning or delta.content:
            turn = replace(turn, reasoning=turn.reasoning + (reasoning or ""), answer=turn.answer + (delta.content or ""))
            yield turn


def stream_turn(server: ChatServer, messages: list[dict], sampling: Sampling, turn: Turn,
                stop: threading.Event | None = None) -> Iterator[Turn]:
    """`turn` as `server` answers `messages`, streamed; ends with a done turn, its `error` set (a clear
    line, never a traceback) when the request failed or the server stopped."""
    from openai import APIConnectionError, APIError, OpenAI

    if server.exit_code() is not None:
        yield replace(turn, error=server.stopped_error(), done=True)
        return
    client = OpenAI(base_url=server.url + "/v1", api_key=server.api_key, max_retries=0, timeout=600)
    extra: dict = {"chat_template_kwargs": {"enable_thinking": bool(sampling.enable_thinking)}}
    if sampling.top_k:
        extra["top_k"] = int(sampling.top_k)
    fields = {"temperature": float(sampling.temperature), "top_p": float(sampling.top_p),
              "max_tokens": int(sampling.max_new_tokens)}
    if sampling.seed is not None:
        fields["seed"] = int(sampling.seed)
    try:
        stream = client.chat.completions.create(model=server.model_name, messages=messages, stream=True,
                                                extra_body=extra, **fields)
        try:
            for step in accumulate(stream, turn):
                turn = step
                yield turn
                if stop is not None and stop.is_set():
                    break
        finally:
            stream.close()  # the server cancels the sequence of a client that went away
        yield replace(turn, done=True)
    except APIError as e:
        if isinstance(e, APIConnectionError):  # a server that died: its supervisor ends right after it
            try:
                server.process.wait(2)
            except subprocess.TimeoutExpired:
                pass
        error = server.stopped_error() if server.exit_code() is not None else _error_text(e)
        yield replace(turn, error=error, done=True)
    except Exception as e:  # noqa: BLE001 (a column shows any failure as a line, not a traceback)
        yield replace(turn, error=f"{type(e).__name__}: {e}", done=True)
    finally:
        client.close()


def stream_side_by_side(jobs: dict[str, tuple[ChatServer, list[dict], Turn]],
                        sampling: Sampling) -> Iterator[dict[str, Turn]]:
    """Every slot's server answers its messages at the same time (a thread each); yields the latest turn
    of every slot whenever one advanced, until all are done. Closing the iterator stops the requests."""
    latest = {slot: turn for slot, (_, _, turn) in jobs.items()}
    updates: queue.Queue = queue.Queue()
    stop = threading.Event()

    def answer(slot: str, server: ChatServer, messages: list[dict], turn: Turn) -> None:
        try:
            for step in stream_turn(server, messages, sampling, turn, stop):
                updates.put((slot, step))
        finally:
            updates.put((slot, None))

    threads = [threading.Thread(target=answer, args=(slot, *job), daemon=True, name=f"chat-{slot}")
               for slot, job in jobs.items()]
    for thread in threads:
        thread.start()
    running = len(threads)
    try:
        while running:
            batch = [updates.get()]
            while True:  # what else arrived meanwhile goes out in the same update
                try:
                    batch.append(updates.get_nowait())
                except queue.Empty:
                    break
            for slot, step in batch:
                if step is None:
                    running -= 1
                else:
                    latest[slot] = step
            yield dict(latest)
    finally:
        stop.set()


# ---- the supervisor: python -m alignlab.webui.chat UI_PID COMMAND... ----------------------------------

def supervise(ui_pid: int, command: list[str]) -> int:
    """Run `command` (in this process group) until it ends; end it when the UI process `ui_pid` is gone.
    A SIGTERM to the group reaches the command too; this waits for it to end."""
    signal.signal(signal.SIGTERM, lambda *_: None)
    child = subprocess.Popen(command)
    while True:
        try:
            code = child.wait(1.0)
            return code if code >= 0 else 128 - code
        except subprocess.TimeoutExpired:
            pass
        if os.getppid() != ui_pid or not pid_alive(ui_pid):
            child.terminate()
            try:
                child.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            return 0


if __name__ == "__main__":
    sys.exit(supervise(int(sys.argv[1]), sys.argv[2:]))
