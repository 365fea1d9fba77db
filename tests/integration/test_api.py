"""`alignlab api` as a real process on loopback, called with the official `openai` client and httpx;
`alignlab chat` through stdin; `alignlab eval loadtest` against the server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import httpx
import pytest
from openai import APIStatusError, AuthenticationError, BadRequestError, OpenAI

from tests.conftest import ROOT, TINY, tiny_model
from tests.integration.test_train_sft import ALIGNLAB

KEY = "sk-alignlab-test"
QUESTION = "孩子身高 95 cm，买童装选多大码？"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir, *args, key=KEY, name="tiny-chat"):
    port = free_port()
    env = {**os.environ, "API_PORT": str(port), "API_MODEL_NAME": name, "API_KEY": key or ""}
    proc = subprocess.Popen([ALIGNLAB, "api", f"model_name_or_path={model_dir}", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read())
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("server did not start")


@pytest.fixture(scope="module")
def chat_model_dir(tmp_path_factory):
    """A random tiny model whose greedy text varies, with a run_config.yaml naming its template."""
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("chat-model")
    tiny_model(seed=3, init_range=0.3).save_pretrained(path)
    AutoTokenizer.from_pretrained(TINY).save_pretrained(path)
    (path / "run_config.yaml").write_text("template: qwen3_nothink\nstage: sft\n")
    return path


@pytest.fixture(scope="module")
def server(chat_model_dir):
    proc, url = start_server(chat_model_dir, "max_new_tokens=24", "infer_max_batch=16")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def client(server):
    return OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0)


def ask(client, **kw):
    return client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": QUESTION}], **kw)


def test_openai_client_non_streaming_streaming_and_n(client):
    assert [m.id for m in client.models.list()] == ["tiny-chat"]
    answer = ask(client, temperature=0, max_tokens=20)
    choice = answer.choices[0]
    assert choice.finish_reason == "length" and choice.message.role == "assistant" and choice.message.content
    assert answer.usage.completion_tokens == 20 and answer.usage.prompt_tokens > 10
    chunks = list(ask(client, temperature=0, max_tokens=20, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == choice.message.content  # the same greedy answer, token by token
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3
    assert chunks[-1].usage.completion_tokens == 20
    two = ask(client, n=2, temperature=1.0, max_tokens=20, seed=7)
    assert [c.index for c in two.choices] == [0, 1] and two.choices[0].message.content != two.choices[1].message.content
    assert two.usage.completion_tokens == 40
    again = ask(client, n=2, temperature=1.0, max_tokens=20, seed=7)
    assert [c.message.content for c in again.choices] == [c.message.content for c in two.choices]
    streamed_two = list(ask(client, n=2, temperature=0, max_tokens=8, stream=True))
    assert {c.choices[0].index for c in streamed_two if c.choices} == {0, 1}
    assert [c.choices[0].finish_reason for c in streamed_two if c.choices and c.choices[0].finish_reason] == ["length"] * 2


def test_stop_words_and_completions(client):
    full = ask(client, temperature=0, max_tokens=20).choices[0].message.content
    stop = next(full[k:k + 2] for k in range(len(full) // 2, len(full) - 2) if full.find(full[k:k + 2]) == k)
    cut = ask(client, temperature=0, max_tokens=20, stop=[stop]).choices[0]
    assert cut.finish_reason == "stop" and cut.message.content == full[:full.index(stop)]
    streamed = "".join(c.choices[0].delta.content or "" for c in ask(client, temperature=0, max_tokens=20, stop=stop,
                                                                      stream=True) if c.choices)
    assert streamed == cut.message.content
    completion = client.completions.create(model="tiny-chat", prompt=["Hello", "你好"], max_tokens=5, temperature=0)
    assert len(completion.choices) == 2 and all(c.finish_reason == "length" for c in completion.choices)
    assert completion.usage.completion_tokens == 10


def test_tools_are_rendered_into_the_prompt_and_tool_turns_accepted(client):
    tools = [{"type": "function", "function": {"name": "get_size", "description": "size for a height",
                                               "parameters": {"type": "object",
                                                              "properties": {"height": {"type": "number"}}}}}]
    plain = ask(client, temperature=0, max_tokens=4)
    with_tools = ask(client, temperature=0, max_tokens=4, tools=tools)
    assert with_tools.usage.prompt_tokens > plain.usage.prompt_tokens + 50
    turns = [{"role": "user", "content": QUESTION},
             {"role": "assistant", "content": None, "tool_calls": [
                 {"id": "call_1", "type": "function", "function": {"name": "get_size", "arguments": '{"height": 95}'}}]},
             {"role": "tool", "tool_call_id": "call_1", "content": '{"size": 100}'}]
    answer = client.chat.completions.create(model="tiny-chat", messages=turns, tools=tools, max_tokens=4)
    assert answer.choices[0].finish_reason in ("length", "stop", "tool_calls")


def test_api_key_is_required(server):
    bad = OpenAI(base_url=server + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(AuthenticationError) as error:
        bad.models.list()
    assert error.value.status_code == 401 and "API key" in error.value.message
    assert httpx.get(server + "/v1/models").status_code == 401


@pytest.mark.parametrize(("body", "status", "needle"), [
    ("{not json", 400, "not valid JSON"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "'robot' is not one of"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, 400, "alternate"),
    ({"messages": [{"role": "user", "content": "说" * 3000}]}, 400, "maximum context length is 1024"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000}, 400, "Lower max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 0}, 400, "n: Input should be greater"),
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400,
     "'image_url' is not supported"),
])
def test_bad_requests_get_openai_style_errors(server, body, status, needle):
    content = body if isinstance(body, str) else json.dumps(body)
    response = httpx.post(server + "/v1/chat/completions", content=content,
                          headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert needle in error["message"] and error["type"] == "invalid_request_error"
    assert httpx.get(server + "/health").json()["status"] == "ok"  # still serving


def test_openai_client_sees_bad_request_and_score_route_refuses(client, server):
    with pytest.raises(BadRequestError, match="context_length_exceeded|maximum context"):
        ask(client, max_tokens=100000)
    with pytest.raises(APIStatusError) as error:
        client.post("/score/evaluation", body={"model": "x", "messages": ["a"]}, cast_to=dict)
    assert error.value.status_code == 405


def test_disconnect_mid_stream_frees_the_slot(server):
    body = {"model": "x", "messages": [{"role": "user", "content": QUESTION}], "stream": True, "max_tokens": 900,
            "temperature": 0}
    before = httpx.get(server + "/health").json()["cancelled"]
    with httpx.stream("POST", server + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        next(lines)
    deadline = time.time() + 20
    health = {}
    while time.time() < deadline:
        health = httpx.get(server + "/health").json()
        if health["cancelled"] > before and health["active"] == 0:
            break
        time.sleep(0.1)
    assert health["cancelled"] > before and health["active"] == 0 and health["queued"] == 0


def loadtest(server, tmp_path, concurrency: str, requests: int) -> dict[int, dict]:
    report = tmp_path / f"load-{concurrency}.json"
    run = subprocess.run([ALIGNLAB, "eval", "loadtest", "--url", server + "/v1", "--concurrency", concurrency,
                          "--requests", str(requests), "--max-tokens", "12", "--api-key", KEY, "--report", str(report)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "| concurrency |" in run.stdout and "TTFT p50/p90/p99" in run.stdout
    return {r["concurrency"]: r for r in json.loads(report.read_text())}


def test_loadtest_200_concurrent_requests_and_batching_speedup(server, tmp_path):
    rows = loadtest(server, tmp_path, "1,16", 64)
    assert rows[1]["ttft_p50_ms"] <= rows[1]["latency_p50_ms"] <= rows[1]["latency_p99_ms"]
    assert rows[16]["requests_per_s"] > 2.5 * rows[1]["requests_per_s"]  # 16 decoded together, not one by one
    crowd = loadtest(server, tmp_path, "200", 200)[200]
    assert crowd["errors"] == 0 and crowd["requests"] == 200 and crowd["mean_output_tokens"] > 5
    health = httpx.get(server + "/health").json()
    assert health["active"] == 0 and health["queued"] == 0  # no leaked slots


def test_reward_model_server_scores_texts(tmp_path):
    import torch
    from transformers import AutoTokenizer

    from alignlab.model.value_head import ValueHeadModel

    reward = ValueHeadModel(tiny_model(seed=4))
    torch.nn.init.normal_(reward.v_head.summary.weight, std=1.0)
    reward.backbone.save_pretrained(tmp_path)
    reward.save_head(str(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(TINY)
    tokenizer.save_pretrained(tmp_path)
    texts = ["建议选 100 码。", "I recommend size 130."]
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    with torch.no_grad():
        expected = [reward.scores(torch.tensor([i]), torch.ones(1, len(i), dtype=torch.long)).item() for i in ids]
    proc, url = start_server(tmp_path, key=None)
    try:
        got = httpx.post(url + "/v1/score/evaluation", json={"model": "rm", "messages": texts}).json()
        assert got["scores"] == pytest.approx(expected, abs=1e-5)
        refused = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert refused.status_code == 405 and "reward model" in refused.json()["error"]["message"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_chat_cli_streams_keeps_history_and_clears(chat_model_dir):
    run = subprocess.run([ALIGNLAB, "chat", f"model_name_or_path={chat_model_dir}", "max_new_tokens=6",
                          "do_sample=false"], input=f"{QUESTION}\nclear\nhi\nexit\n", capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("Assistant: ") == 2 and "History cleared." in run.stdout


def test_chat_session_history_feeds_the_next_prompt(tokenizer):
    from alignlab.data import get_template
    from alignlab.infer.chat import ChatSession
    from alignlab.infer.engine import HFEngine, SamplingParams

    template = get_template("qwen3", tokenizer)
    engine = HFEngine(tiny_model(seed=3, init_range=0.3).eval(), tokenizer, template)
    try:
        session = ChatSession(engine, tokenizer, template, SamplingParams(max_new_tokens=6, do_sample=False),
                              system="be brief")
        first = "".join(piece for kind, piece in session.reply(QUESTION))
        assert session.messages == [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": first}]
        expected = template.encode_prompt(tokenizer, [*session.messages, {"role": "user", "content": "hi"}], "be brief")
        assert session.prompt_ids("hi") == expected
        session.clear()
        assert session.prompt_ids("hi") == template.encode_prompt(tokenizer, [{"role": "user", "content": "hi"}],
                                                                  "be brief")
    finally:
        engine.close()
