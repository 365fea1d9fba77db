"""`alignlab api` as a real process on loopback, called with the official `openai` client and httpx;
`alignlab chat` through stdin; `alignlab eval loadtest` against the server. In-process servers
(uvicorn in a thread) where a test needs to look inside the engine."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
from openai import APIStatusError, AuthenticationError, BadRequestError, OpenAI

from tests.conftest import ROOT, TINY, save_tiny_model, tiny_model
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
    path = save_tiny_model(tmp_path_factory.mktemp("chat-model"), seed=3, init_range=0.3)
    (path / "run_config.yaml").write_text("template: qwen3_nothink\nstage: sft\n")
    return path


@pytest.fixture(scope="module")
def server(chat_model_dir):  # greedy by default, as examples/inference/demo.yaml
    proc, url = start_server(chat_model_dir, "max_new_tokens=24", "infer_max_batch=16", "do_sample=false")
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
    deadline = time.time() + 120
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


def test_loadtest_200_concurrent_requests_decoded_in_batches(server, tmp_path):
    steps = httpx.get(server + "/health").json()["decode_steps"]
    rows = loadtest(server, tmp_path, "16", 32)
    assert rows[16]["ttft_p50_ms"] <= rows[16]["latency_p50_ms"] <= rows[16]["latency_p99_ms"]
    tokens = rows[16]["mean_output_tokens"] * (32 + 2)  # the measured requests and 2 warm-up ones
    assert rows[16]["tokens_from"] == "usage" and rows[16]["mean_output_tokens"] == 12
    # 16 clients decoded together: one decode step serves many requests (one by one it would be ~1 per token)
    assert httpx.get(server + "/health").json()["decode_steps"] - steps < tokens / 4
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
        assert got["scores"] == pytest.approx(expected, rel=1e-5)  # float32 sums in another order
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


@contextmanager
def serve_in_thread(app):
    """`app` served by uvicorn on a loopback port from a background thread; yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 120
    while not server.started and thread.is_alive() and time.time() < deadline:
        time.sleep(0.02)
    assert server.started, "the in-process server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_request_sampling_fields_win_over_the_server_defaults(client):
    greedy = ask(client, max_tokens=12).choices[0].message.content  # the server's do_sample: false applies
    assert greedy == ask(client, temperature=0, max_tokens=12).choices[0].message.content
    sampled = ask(client, n=2, temperature=1.0, seed=5, max_tokens=12)
    texts = [c.message.content for c in sampled.choices]
    assert texts[0] != texts[1] and greedy not in texts
    assert [c.message.content for c in ask(client, n=2, temperature=1.0, seed=5, max_tokens=12).choices] == texts
    several = [c.message.content for c in ask(client, n=3, max_tokens=12).choices]  # n alone asks for sampling
    assert len(set(several)) > 1
    forced = ask(client, temperature=1.0, max_tokens=12, extra_body={"do_sample": False})  # LLaMA-Factory's field
    assert forced.choices[0].message.content == greedy


def test_developer_role_is_the_system_message(client):
    def answer(role):
        return client.chat.completions.create(model="tiny-chat", temperature=0, max_tokens=8, messages=[
            {"role": role, "content": "Answer with a size."}, {"role": "user", "content": QUESTION}])

    as_system, as_developer = answer("system"), answer("developer")
    assert as_developer.usage.prompt_tokens == as_system.usage.prompt_tokens > ask(client, max_tokens=1).usage.prompt_tokens
    assert as_developer.choices[0].message.content == as_system.choices[0].message.content


@pytest.mark.parametrize(("field", "kwargs"), [
    ("response_format", {"response_format": {"type": "json_object"}}),
    ("tool_choice", {"tool_choice": "required"}),
    ("logit_bias", {"logit_bias": {"5": 10}}),
    ("frequency_penalty", {"frequency_penalty": 0.5}),
    ("echo", {"extra_body": {"echo": True}}),
    ("functions", {"functions": [{"name": "f", "parameters": {}}]}),
    ("made_up_field", {"extra_body": {"made_up_field": 1}}),
    ("top_logprobs", {"top_logprobs": 2}),
])
def test_fields_the_server_cannot_follow_are_a_400_naming_them(client, field, kwargs):
    with pytest.raises(BadRequestError) as error:
        ask(client, max_tokens=2, **kwargs)
    assert error.value.body["param"] == field and f"`{field}`" in error.value.message


def test_fields_that_ask_for_nothing_are_accepted(client):
    answer = ask(client, max_tokens=2, temperature=0, response_format={"type": "text"}, frequency_penalty=0,
                 presence_penalty=0, tool_choice="auto", user="someone", parallel_tool_calls=True)
    assert answer.choices[0].message.content
    for body in ({"echo": True}, {"best_of": 3}, {"suffix": "!"}):
        with pytest.raises(BadRequestError) as error:
            client.completions.create(model="tiny-chat", prompt="Hello", max_tokens=2, extra_body=body)
        assert error.value.body["param"] == next(iter(body))


def test_logprobs_in_the_openai_shape_streamed_and_not(client, chat_model_dir, tokenizer):
    import torch

    from alignlab.data import get_template

    answer = ask(client, temperature=0, max_tokens=12, logprobs=True, top_logprobs=3)
    choice = answer.choices[0]
    content = choice.logprobs.content
    assert len(content) == answer.usage.completion_tokens == 12
    # the tokens' bytes make up the answer (a random model also writes broken UTF-8, shown as U+FFFD)
    assert b"".join(bytes(t.bytes) for t in content).decode(errors="replace") == choice.message.content
    for t in content:
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token  # greedy took the likeliest
        assert [x.logprob for x in t.top_logprobs] == sorted((x.logprob for x in t.top_logprobs), reverse=True)
    template = get_template("qwen3_nothink", tokenizer)
    prompt = template.encode_prompt(tokenizer, [{"role": "user", "content": QUESTION}])
    from transformers import AutoModelForCausalLM

    from alignlab.infer.api import _byte_decoder

    to_char = {b: c for c, b in _byte_decoder().items()}  # byte-level BPE: a token's bytes name it exactly
    ids = tokenizer.convert_tokens_to_ids(["".join(to_char[b] for b in t.bytes) for t in content])
    with torch.no_grad():  # the model's log-probabilities of the answer it gave, in one forward pass
        logits = AutoModelForCausalLM.from_pretrained(chat_model_dir)(torch.tensor([prompt + ids])).logits
    expected = logits[0, len(prompt) - 1:-1].log_softmax(-1)
    assert [t.logprob for t in content] == pytest.approx([expected[k, i].item() for k, i in enumerate(ids)], abs=1e-4)
    assert [x.logprob for x in content[0].top_logprobs] == pytest.approx(expected[0].topk(3).values.tolist(), abs=1e-4)
    streamed = [c.choices[0].logprobs for c in ask(client, temperature=0, max_tokens=12, logprobs=True,
                                                   top_logprobs=3, stream=True) if c.choices and c.choices[0].logprobs]
    flat = [t for chunk in streamed for t in chunk.content]
    assert [t.token for t in flat] == [t.token for t in content]
    assert [t.logprob for t in flat] == pytest.approx([t.logprob for t in content], abs=1e-4)  # fp32 over different batch shapes
    assert ask(client, temperature=0, max_tokens=4).choices[0].logprobs is None
    legacy = client.completions.create(model="tiny-chat", prompt="Hello", max_tokens=6, temperature=0, logprobs=2)
    lp = legacy.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert lp.text_offset == [sum(map(len, lp.tokens[:k])) for k in range(6)]
    assert all(len(top) == 2 and max(top.values()) >= lp.token_logprobs[k] - 1e-6 for k, top in enumerate(lp.top_logprobs))


def test_client_gone_before_a_non_streamed_answer_frees_the_slot(server):
    before = httpx.get(server + "/health").json()
    body = json.dumps({"model": "x", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 900,
                       "temperature": 0}).encode()
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        deadline = time.time() + 120
        while httpx.get(server + "/health").json()["active"] == 0 and time.time() < deadline:
            time.sleep(0.01)
        assert httpx.get(server + "/health").json()["active"] == 1  # decoding, not finished
    deadline = time.time() + 120
    health = {}
    while time.time() < deadline:
        health = httpx.get(server + "/health").json()
        if health["cancelled"] > before["cancelled"] and health["active"] == 0:
            break
        time.sleep(0.05)
    assert health["cancelled"] == before["cancelled"] + 1 and health["finished"] == before["finished"]
    assert health["active"] == 0 and health["queued"] == 0


def test_api_key_is_compared_in_constant_time(monkeypatch):
    import hmac

    from transformers import AutoTokenizer

    from alignlab.data import get_template
    from alignlab.infer.api import create_app
    from alignlab.model.run_loader import LoadedModel

    compared, original = [], hmac.compare_digest

    def compare_digest(a, b):
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr("alignlab.infer.api.hmac.compare_digest", compare_digest)
    tokenizer = AutoTokenizer.from_pretrained(TINY)
    loaded = LoadedModel(None, tokenizer, get_template("qwen3_nothink", tokenizer), "m")

    class Engine:
        can_generate, stats = True, {}

    transport = httpx.ASGITransport(app=create_app(Engine(), loaded, None, "m", api_key="secret"))

    async def call(key):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return (await c.get("/v1/models", headers={"Authorization": f"Bearer {key}"})).status_code

    assert asyncio.run(call("wrong")) == 401 and asyncio.run(call("secret")) == 200
    assert compared == [(b"Bearer wrong", b"Bearer secret"), (b"Bearer secret", b"Bearer secret")]


def test_waiting_requests_start_decoding_in_arrival_order(chat_model_dir):
    """48 requests at once on 2 slots: the order the engine admits them is the order they arrived."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignlab.data import get_template
    from alignlab.infer.api import create_app
    from alignlab.infer.engine import HFEngine, SamplingParams
    from alignlab.model.run_loader import LoadedModel

    tokenizer = AutoTokenizer.from_pretrained(chat_model_dir)
    template = get_template("qwen3_nothink", tokenizer)

    admitted: list[str] = []

    class RecordingEngine(HFEngine):
        def _prefill(self, batch, new):
            admitted.extend(tokenizer.decode(s.prompt_ids).split("#")[1].split("<")[0] for s in new)
            super()._prefill(batch, new)

    engine = RecordingEngine(AutoModelForCausalLM.from_pretrained(chat_model_dir).eval(), tokenizer, template,
                             max_batch=2)
    gen = SamplingParams(max_new_tokens=3, do_sample=False)
    app = create_app(engine, LoadedModel(engine.model, tokenizer, template, "m"), gen, "m")
    arrived: list[str] = []

    async def recording(scope, receive, send):  # arrival: the moment the whole request body is in
        async def receive_and_note():
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body"):
                arrived.append(dict(scope["headers"]).get(b"x-request", b"").decode())
            return message
        await app(scope, receive_and_note if scope["type"] == "http" else receive, send)

    async def crowd(url):
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=64)) as c:
            async def one(k):
                response = await c.post("/v1/chat/completions", headers={"x-request": str(k)}, json={
                    "messages": [{"role": "user", "content": f"#{k}"}], "max_tokens": 3})
                assert response.status_code == 200, response.text
            await asyncio.gather(*(one(k) for k in range(48)))

    try:
        with serve_in_thread(recording) as url:
            asyncio.run(crowd(url))
    finally:
        engine.close()
    assert sorted(arrived, key=int) == [str(k) for k in range(48)]
    assert admitted == arrived


def test_public_host_without_a_key_warns_and_beam_search_is_refused(chat_model_dir, monkeypatch, capsys):
    import uvicorn

    from alignlab.config import ConfigError, load_config
    from alignlab.infer.api import run_api
    from alignlab.infer.chat import run_chat

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(kw))
    monkeypatch.delenv("API_KEY", raising=False)
    for host, warned in (("0.0.0.0", True), ("127.0.0.1", False), ("localhost", False)):
        monkeypatch.setenv("API_HOST", host)
        run_api(load_config([f"model_name_or_path={chat_model_dir}"]))
        assert served[-1]["host"] == host
        assert ("WARNING: serving on 0.0.0.0 without API_KEY" in capsys.readouterr().err) == warned
    monkeypatch.setenv("API_KEY", "k")
    monkeypatch.setenv("API_HOST", "0.0.0.0")
    run_api(load_config([f"model_name_or_path={chat_model_dir}"]))
    assert "WARNING" not in capsys.readouterr().err
    for run in (run_api, run_chat):
        with pytest.raises(ConfigError, match="num_beams: 3 .*cannot beam-search"):
            run(load_config([f"model_name_or_path={chat_model_dir}", "num_beams=3"]))
    assert len(served) == 4
