"""`alignlab eval loadtest` against a loopback fake OpenAI server that sends no usage: output tokens
are counted here (streamed chunks, or a tokenizer), whole answers with --no-stream, and the key comes
from OPENAI_API_KEY."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from alignlab.eval.loadtest import main
from tests.conftest import TINY
from tests.integration.test_api import serve_in_thread

KEY = "sk-fake"
PIECES = ["建议", "选 ", "100", " 码", "。"]


def fake_server(bodies: list[dict]):
    """Chat completions answering PIECES (one SSE chunk each when streamed), never with usage."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return JSONResponse({"error": {"message": "Invalid API key", "type": "authentication_error"}}, 401)
        body = await request.json()
        bodies.append(body)
        if not body.get("stream"):
            return {"object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "".join(PIECES)}, "finish_reason": "stop"}]}

        async def chunks():
            for piece in PIECES:
                yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': piece}}]})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    return app


@pytest.fixture
def fake(monkeypatch):
    bodies: list[dict] = []
    monkeypatch.delenv("API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # no --api-key below: the key comes from here
    with serve_in_thread(fake_server(bodies)) as url:
        yield url + "/v1", bodies


def loadtest(url, tmp_path, *args) -> tuple[int, dict]:
    report = tmp_path / "report.json"
    code = main(["--url", url, "--concurrency", "2", "--requests", "6", "--warmup", "0", "--report", str(report),
                 *args])
    return code, json.loads(report.read_text())[0]


def test_tokens_are_counted_when_the_server_sends_no_usage(fake, tmp_path):
    from transformers import AutoTokenizer

    url, bodies = fake
    code, row = loadtest(url, tmp_path)
    assert code == 0 and row["errors"] == 0 and row["requests"] == 6
    assert row["tokens_from"] == "stream chunks" and row["mean_output_tokens"] == len(PIECES)
    assert row["output_tokens_per_s"] > 0
    assert all(b["stream"] and b["stream_options"] == {"include_usage": True} for b in bodies)
    code, row = loadtest(url, tmp_path, "--tokenizer", str(TINY))
    expected = len(AutoTokenizer.from_pretrained(TINY).encode("".join(PIECES), add_special_tokens=False))
    assert code == 0 and row["tokens_from"] == "tokenizer" and row["mean_output_tokens"] == expected


def test_non_stream_mode(fake, tmp_path, capsys):
    from transformers import AutoTokenizer

    url, bodies = fake
    code, row = loadtest(url, tmp_path, "--no-stream", "--tokenizer", str(TINY))
    expected = len(AutoTokenizer.from_pretrained(TINY).encode("".join(PIECES), add_special_tokens=False))
    assert code == 0 and row["errors"] == 0 and not row["stream"]
    assert row["tokens_from"] == "tokenizer" and row["mean_output_tokens"] == expected
    assert row["latency_p50_ms"] > 0 and row["ttft_p50_ms"] != row["ttft_p50_ms"]  # no first token to time
    assert "| n/a / n/a / n/a |" in capsys.readouterr().out
    assert bodies and all(b["stream"] is False and "stream_options" not in b for b in bodies)
    code, row = loadtest(url, tmp_path, "--no-stream")  # nothing to count with: said, not reported as 0
    assert code == 0 and row["tokens_from"] == "none" and "| n/a |" in capsys.readouterr().out


def test_a_missing_key_is_reported(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY")
    code, row = loadtest(fake[0], tmp_path)
    assert code == 1 and row["errors"] == 6 and "HTTP 401" in row["first_error"]
    assert "first error: HTTP 401" in capsys.readouterr().err
