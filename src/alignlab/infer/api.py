"""`alignlab api`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) over an inference engine.

Routes: GET /v1/models, POST /v1/chat/completions, POST /v1/completions, POST /v1/score/evaluation
(reward models, LLaMA-Factory's shape), GET /health. Errors use OpenAI's body
`{"error": {"message", "type", "param", "code"}}`; a field the server cannot follow is such a 400
naming the field, never silently ignored. A client that disconnects, streaming or not, has its
sequences cancelled, which frees their batch slots. Request sampling fields win over the server's
generating keys, which are only defaults for the fields a request leaves out.

Requests reach the engine in the order they arrive (the engine admits them first come, first
served): nothing between reading a request and submitting it may wait on a thread pool, so the
route dependencies are `async def`.

No `from __future__ import annotations` here: FastAPI reads the route annotations at runtime.
"""

import asyncio
import copy
import functools
import hmac
import json
import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..data.templates import TemplateError
from ..data.tools import extract_function_calls
from .engine import Event, SamplingParams, TokenLogprob, split_reasoning

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# OpenAI request fields that do not change the answer: accepted, not used.
NO_EFFECT_FIELDS = frozenset({"user", "metadata", "safety_identifier", "prompt_cache_key", "service_tier"})
# OpenAI request fields this server cannot follow: accepted only with the value that asks for nothing.
DEFAULT_ONLY_FIELDS = {"response_format": [{"type": "text"}], "frequency_penalty": [0], "presence_penalty": [0],
                       "logit_bias": [{}], "parallel_tool_calls": [True], "modalities": [["text"]],
                       "store": [False], "echo": [False], "best_of": [1], "suffix": [""]}


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")  # other fields are checked by `check_fields`

    model: str = ""
    do_sample: bool | None = None  # LLaMA-Factory's API field; unset: decided as in `_Server.params`
    n: int = Field(1, ge=1, le=32)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    seed: int | None = None


class ChatRequest(_Request):
    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    max_completion_tokens: int | None = Field(None, ge=1)
    chat_template_kwargs: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tool_choice: str | dict[str, Any] | None = None


class CompletionRequest(_Request):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=20)


def check_fields(request: _Request) -> None:
    """A 400 naming the first field this server would otherwise ignore: one it does not know, or a
    value it cannot follow."""
    for name, value in (request.model_extra or {}).items():
        if value is None or name in NO_EFFECT_FIELDS:
            continue
        allowed = DEFAULT_ONLY_FIELDS.get(name)
        if allowed is None:
            raise APIError(400, f"`{name}` is not supported by this server; remove it from the request.", name,
                           "unsupported_parameter")
        if value not in allowed:
            raise APIError(400, f"`{name}`: {value!r} is not supported by this server; it accepts only "
                           f"{' or '.join(map(repr, allowed))}.", name, "unsupported_value")
    if isinstance(request, ChatRequest):
        if request.tool_choice not in (None, "auto", "none"):
            raise APIError(400, f"`tool_choice`: {request.tool_choice!r} cannot be enforced by this server; use "
                           "'auto' (the model decides) or 'none' (no tool calls are extracted).", "tool_choice",
                           "unsupported_value")
        if request.top_logprobs is not None and not request.logprobs:
            raise APIError(400, "`top_logprobs` needs `logprobs: true`.", "top_logprobs")


class ScoreRequest(BaseModel):
    model: str = ""
    messages: list[str] = Field(min_length=1)
    max_length: int | None = Field(None, ge=1)


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise APIError(400, f"{where}: content part of type {kind!r} is not supported; send text.", where)
            parts.append(part.get("text", ""))
        return "".join(parts)
    raise APIError(400, f"{where}: content must be a string or a list of text parts.", where)


def convert_messages(messages: list[dict]) -> tuple[list[dict], str | None]:
    """OpenAI messages -> (template messages user/assistant/function/observation, system)."""
    system, out = None, []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role")
        if role not in ROLES:
            raise APIError(400, f"{where}.role {role!r} is not one of {', '.join(ROLES)}.", f"{where}.role")
        if role in ("system", "developer"):  # OpenAI's newer name for the system message
            if i != 0:
                raise APIError(400, f"{where}: a system message is only allowed first.", where)
            system = _text(message.get("content"), where)
        elif role == "user":
            out.append({"role": "user", "content": _text(message.get("content"), where)})
        elif role == "assistant" and message.get("tool_calls"):
            try:
                calls = [{"name": c["function"]["name"], "arguments": c["function"].get("arguments", "{}")}
                         for c in message["tool_calls"]]
            except (KeyError, TypeError):
                raise APIError(400, f"{where}.tool_calls: each needs function.name and function.arguments.",
                               f"{where}.tool_calls") from None
            out.append({"role": "function", "content": json.dumps(calls, ensure_ascii=False)})
        elif role == "assistant":
            out.append({"role": "assistant", "content": _text(message.get("content"), where)})
        else:  # tool / function results; consecutive ones form one observation
            text = _text(message.get("content"), where)
            if out and out[-1]["role"] == "observation":
                out[-1]["content"] += "\n" + text
            else:
                out.append({"role": "observation", "content": text})
    for i, message in enumerate(out):
        asking = message["role"] in ("user", "observation")
        if asking != (i % 2 == 0):
            raise APIError(400, "messages must alternate user (or tool) and assistant turns, after an optional "
                           f"system message; turn {i + 1} is {message['role']!r}.", "messages")
    if len(out) % 2 == 0:
        raise APIError(400, "The last message must be from the user (or a tool result).", "messages")
    return out, system


def _error_body(message: str, kind: str = "invalid_request_error", param=None, code=None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class _Server:
    """Request handling shared by the routes: limits, sampling params, running sequences."""

    def __init__(self, engine, gen, model_name: str):
        self.engine, self.gen, self.model_name = engine, gen, model_name

    def params(self, request: _Request, prompt_len: int, max_tokens: int | None,
               logprobs: int | None = None) -> SamplingParams:
        """The request's sampling fields over the server's generating keys (defaults for what it leaves out)."""
        context = self.engine.context_len
        if prompt_len >= context:
            raise APIError(400, f"This model's maximum context length is {context} tokens; the prompt has "
                           f"{prompt_len} tokens. Shorten the messages.", "messages", "context_length_exceeded")
        room = context - prompt_len
        if max_tokens is not None and max_tokens > room:
            raise APIError(400, f"This model's maximum context length is {context} tokens; you requested "
                           f"{prompt_len + max_tokens} tokens ({prompt_len} in the prompt, {max_tokens} for the "
                           f"completion). Lower max_tokens to at most {room}.", "max_tokens",
                           "context_length_exceeded")
        stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        do_sample = request.do_sample  # else: temperature > 0 samples, 0 is greedy; else the server's do_sample
        if do_sample is None and request.temperature is not None:
            do_sample = request.temperature > 0
        if do_sample is None and (request.n > 1 or request.seed is not None or request.top_p is not None
                                  or request.top_k is not None):
            do_sample = True  # several answers, a seed or a sampling filter ask for sampling
        return SamplingParams.from_generating_args(
            self.gen, max_new_tokens=max_tokens or min(self.gen.max_new_tokens, room), temperature=request.temperature,
            top_p=request.top_p, top_k=request.top_k, repetition_penalty=request.repetition_penalty, stop=stop,
            seed=request.seed, do_sample=do_sample, logprobs=logprobs)

    def submit(self, prompts: list[list[int]], params: SamplingParams, n: int):
        """Start n sequences per prompt; returns (queue of (index, Event), sequences)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        seqs = []
        for p, ids in enumerate(prompts):
            for j in range(n):
                index = p * n + j
                seed = None if params.seed is None else params.seed + index
                seqs.append(self.engine.submit(
                    ids, SamplingParams(**{**params.__dict__, "seed": seed}),
                    lambda event, i=index: loop.call_soon_threadsafe(events.put_nowait, (i, event))))
        return events, seqs

    async def collect(self, events: asyncio.Queue, count: int, seqs, http) -> list[dict] | None:
        """All `count` answers; None when the client went away first. Either way the sequences are
        cancelled when this returns, which frees the batch slots of unfinished ones."""
        answers = asyncio.ensure_future(self._gather(events, count))
        gone = asyncio.ensure_future(_disconnected(http))
        try:
            await asyncio.wait({answers, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not answers.done():
                answers.cancel()
            for seq in seqs:
                seq.cancel()
        return answers.result() if answers.done() and not answers.cancelled() else None

    @staticmethod
    async def _gather(events: asyncio.Queue, count: int) -> list[dict]:
        out = [{"text": "", "finish_reason": None, "completion_tokens": 0, "logprobs": []} for _ in range(count)]
        left = count
        while left:
            i, event = await events.get()
            out[i]["text"] += event.delta
            out[i]["logprobs"] += event.logprobs or []
            if event.finished:
                if event.finish_reason == "error":
                    raise APIError(500, f"Generation failed: {event.error}", kind="server_error")
                out[i].update(finish_reason=event.finish_reason, completion_tokens=event.completion_tokens)
                left -= 1
        return out


async def _disconnected(http) -> None:
    """Returns when the client of `http` (a Starlette Request whose body was read) disconnects."""
    while (await http.receive())["type"] != "http.disconnect":
        pass


def _byte_decoder() -> dict[str, int]:
    """Byte-level BPE's printable alphabet (GPT-2's): character -> the byte it stands for."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + k): b for k, b in enumerate(others)}}


def _token_bytes(tokenizer) -> Any:
    """token id -> (text, bytes) of that one token: exact bytes for byte-level BPE tokenizers, whose
    tokens may hold part of a character; the token decoded alone otherwise."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    table = _byte_decoder() if type(getattr(backend, "decoder", None)).__name__ == "ByteLevel" else {}

    @functools.lru_cache(maxsize=1 << 16)
    def token(token_id: int) -> tuple[str, bytes]:
        piece = tokenizer.convert_ids_to_tokens(token_id)
        if table and piece and all(c in table for c in piece):
            raw = bytes(table[c] for c in piece)
        else:
            raw = tokenizer.decode([token_id]).encode("utf-8")
        return raw.decode("utf-8", errors="replace"), raw

    return token


def _logprob(value: float) -> float:
    return max(value, -9999.0)  # JSON has no -inf


def _chat_logprobs(entries: list[TokenLogprob], token) -> list[dict]:
    """OpenAI's chat `logprobs.content`: one object per token with its `top_logprobs`."""
    def one(token_id: int, logprob: float) -> dict:
        text, raw = token(token_id)
        return {"token": text, "logprob": _logprob(logprob), "bytes": list(raw)}

    return [{**one(e.token_id, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]} for e in entries]


def _completion_logprobs(entries: list[TokenLogprob], token, offset: int) -> dict:
    """The legacy completions `logprobs`: tokens, token_logprobs, top_logprobs, text_offset (from `offset`)."""
    out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for e in entries:
        text = token(e.token_id)[0]
        out["tokens"].append(text)
        out["token_logprobs"].append(_logprob(e.logprob))
        out["top_logprobs"].append({token(t)[0]: _logprob(lp) for t, lp in e.top})
        out["text_offset"].append(offset)
        offset += len(text)
    return out


def create_app(engine, loaded, gen, model_name: str, api_key: str | None = None):
    """The FastAPI application serving `engine` (an HFEngine/VllmEngine, or a RewardScorer)."""
    from fastapi import Depends, FastAPI, Request, Response
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI(title="alignlab API")
    server = _Server(engine, gen, model_name)
    tokenizer = loaded.tokenizer
    token = _token_bytes(tokenizer)
    expected_auth = f"Bearer {api_key}".encode() if api_key else None

    @app.exception_handler(APIError)
    async def _api_error(request, error: APIError):
        return JSONResponse(_error_body(error.message, error.kind, error.param, error.code), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, error: RequestValidationError):
        problems = error.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return JSONResponse(_error_body(f"The request body is not valid JSON: {problems[0].get('msg')}."),
                                status_code=400)
        text = "; ".join(f"{'.'.join(str(x) for x in p.get('loc', [])[1:]) or 'body'}: {p.get('msg')}"
                         for p in problems)
        first = problems[0].get("loc", [])[1:] if problems else []
        return JSONResponse(_error_body(f"Invalid request: {text}.", param=".".join(map(str, first)) or None),
                            status_code=400)

    async def check_key(request: Request):
        if expected_auth and not hmac.compare_digest(request.headers.get("authorization", "").encode(), expected_auth):
            raise APIError(401, "Invalid or missing API key: send `Authorization: Bearer <API_KEY>`.",
                           code="invalid_api_key", kind="authentication_error")

    async def need_generation():
        if not engine.can_generate:
            raise APIError(405, "This server serves a reward model: use POST /v1/score/evaluation.")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, **engine.stats,
                "max_batch": getattr(engine, "max_batch", None)}

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": int(time.time()),
                                            "owned_by": "alignlab"}]}

    @app.post("/v1/score/evaluation", dependencies=[Depends(check_key)])
    async def score(request: ScoreRequest):
        if engine.can_generate:
            raise APIError(405, "This server serves a generation model; start it on a reward model "
                           "(a run of stage rm) to score texts.")
        scores = await asyncio.to_thread(engine.score, request.messages, request.max_length)
        return {"id": f"scoreval-{uuid.uuid4().hex}", "model": model_name, "scores": scores}

    @app.post("/v1/chat/completions", dependencies=[Depends(check_key), Depends(need_generation)])
    async def chat_completions(request: ChatRequest, http: Request):
        check_fields(request)
        messages, system = convert_messages(request.messages)
        template = loaded.template
        thinking = (request.chat_template_kwargs or {}).get("enable_thinking")
        if thinking is not None and thinking != template.enable_thinking:
            template = copy.copy(template)
            object.__setattr__(template, "enable_thinking", bool(thinking))
        tools = json.dumps(request.tools, ensure_ascii=False) if request.tools else None
        try:
            prompt_ids = template.encode_prompt(tokenizer, messages, system, tools)
        except (TemplateError, ValueError) as e:
            raise APIError(400, f"The messages cannot be rendered with template {template.name!r}: {e}",
                           "messages") from None
        params = server.params(request, len(prompt_ids), request.max_completion_tokens or request.max_tokens,
                               (request.top_logprobs or 0) if request.logprobs else None)
        events, seqs = server.submit([prompt_ids], params, request.n)
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model_name}
        tool_format = getattr(template, "tool_format", "default")
        tools = request.tools if request.tool_choice != "none" else None  # "none": answers are text
        if not request.stream:
            results = await server.collect(events, request.n, seqs, http)
            if results is None:
                return Response(status_code=499)  # the client is gone; nothing reads this
            choices = []
            for i, result in enumerate(results):
                reasoning, answer = split_reasoning(template, result["text"], final=True)
                message: dict[str, Any] = {"role": "assistant", "content": answer}
                if reasoning is not None:
                    message["reasoning_content"] = reasoning
                calls = extract_function_calls(tool_format, answer) if tools else None
                reason = result["finish_reason"]
                if calls:
                    message.update(content=None, tool_calls=_tool_calls(calls))
                    reason = "tool_calls"
                logprobs = ({"content": _chat_logprobs(result["logprobs"], token), "refusal": None}
                            if request.logprobs else None)
                choices.append({"index": i, "message": message, "finish_reason": reason, "logprobs": logprobs})
            return {**meta, "object": "chat.completion", "choices": choices,
                    "usage": _usage(len(prompt_ids), results)}
        return StreamingResponse(_chat_stream(events, seqs, request, tools, template, tool_format, meta,
                                              len(prompt_ids), token), media_type="text/event-stream")

    @app.post("/v1/completions", dependencies=[Depends(check_key), Depends(need_generation)])
    async def completions(request: CompletionRequest, http: Request):
        check_fields(request)
        texts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        if not texts:
            raise APIError(400, "prompt must not be empty.", "prompt")
        prompts = [tokenizer.encode(t) for t in texts]
        params = server.params(request, max(map(len, prompts)), request.max_tokens, request.logprobs)
        events, seqs = server.submit(prompts, params, request.n)
        meta = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model_name}
        count = len(prompts) * request.n
        wants_logprobs = request.logprobs is not None
        if not request.stream:
            results = await server.collect(events, count, seqs, http)
            if results is None:
                return Response(status_code=499)
            choices = [{"index": i, "text": r["text"], "finish_reason": r["finish_reason"],
                        "logprobs": _completion_logprobs(r["logprobs"], token, 0) if wants_logprobs else None}
                       for i, r in enumerate(results)]
            return {**meta, "object": "text_completion", "choices": choices,
                    "usage": _usage(sum(map(len, prompts)), results)}

        async def stream():
            left, produced, offsets = count, [0] * count, [0] * count
            try:
                while left:
                    i, event = await events.get()
                    produced[i] = event.completion_tokens
                    left -= event.finished
                    logprobs = None
                    if wants_logprobs:
                        logprobs = _completion_logprobs(event.logprobs or [], token, offsets[i])
                        offsets[i] += sum(map(len, logprobs["tokens"]))
                    yield _sse({**meta, "object": "text_completion", "choices": [{
                        "index": i, "text": event.delta, "logprobs": logprobs,
                        "finish_reason": event.finish_reason if event.finished else None}]})
                if (request.stream_options or {}).get("include_usage"):
                    prompt_tokens = sum(map(len, prompts))
                    yield _sse({**meta, "object": "text_completion", "choices": [], "usage": {
                        "prompt_tokens": prompt_tokens, "completion_tokens": sum(produced),
                        "total_tokens": prompt_tokens + sum(produced)}})
                yield "data: [DONE]\n\n"
            finally:
                for seq in seqs:
                    seq.cancel()

        return StreamingResponse(stream(), media_type="text/event-stream")

    return app


def _tool_calls(calls: list[tuple[str, str]]) -> list[dict]:
    return [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": {"name": n, "arguments": a}}
            for n, a in calls]


def _usage(prompt_tokens: int, results: list[dict]) -> dict:
    completion = sum(r["completion_tokens"] for r in results)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion}


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _chat_stream(events: asyncio.Queue, seqs, request: ChatRequest, tools, template, tool_format: str,
                       meta: dict, prompt_tokens: int, token):
    """SSE chunks: role first, then reasoning/content deltas per choice, then finish, usage, [DONE].
    With `tools`, the answer is held until the end so a tool call is sent whole. Token logprobs ride
    on the next chunk sent for their choice."""
    n = request.n
    texts, sent_reasoning, sent_answer, produced = [""] * n, [""] * n, [""] * n, [0] * n
    pending: list[list[TokenLogprob]] = [[] for _ in range(n)]

    def chunk(i: int, delta: dict, reason: str | None = None) -> str:
        logprobs = None
        if pending[i]:
            logprobs, pending[i] = {"content": _chat_logprobs(pending[i], token), "refusal": None}, []
        return _sse({**meta, "object": "chat.completion.chunk",
                     "choices": [{"index": i, "delta": delta, "finish_reason": reason, "logprobs": logprobs}]})

    try:
        for i in range(n):
            yield chunk(i, {"role": "assistant", "content": ""})
        left = n
        while left:
            i, event = await events.get()
            event: Event
            if event.finish_reason == "error":
                yield _sse(_error_body(f"Generation failed: {event.error}", "server_error"))
                return
            texts[i] += event.delta
            produced[i] = event.completion_tokens
            pending[i] += event.logprobs or []
            reasoning, answer = split_reasoning(template, texts[i], final=event.finished)
            delta: dict[str, Any] = {}
            if reasoning is not None and reasoning.startswith(sent_reasoning[i]) and reasoning != sent_reasoning[i]:
                delta["reasoning_content"] = reasoning[len(sent_reasoning[i]):]
                sent_reasoning[i] = reasoning
            reason = event.finish_reason if event.finished else None
            if not tools and answer.startswith(sent_answer[i]) and answer != sent_answer[i]:
                delta["content"] = answer[len(sent_answer[i]):]
                sent_answer[i] = answer
            elif tools and event.finished:
                calls = extract_function_calls(tool_format, answer)
                if calls:
                    delta["tool_calls"] = [{"index": k, **c} for k, c in enumerate(_tool_calls(calls))]
                    reason = "tool_calls"
                elif answer:
                    delta["content"] = answer
            if delta:
                yield chunk(i, delta)
            if event.finished:
                left -= 1
                yield chunk(i, {}, reason)
        if (request.stream_options or {}).get("include_usage"):
            total = sum(produced)
            yield _sse({**meta, "object": "chat.completion.chunk", "choices": [], "usage": {
                "prompt_tokens": prompt_tokens, "completion_tokens": total, "total_tokens": prompt_tokens + total}})
        yield "data: [DONE]\n\n"
    finally:
        for seq in seqs:
            seq.cancel()


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_api(cfg) -> None:
    """Load the model of `cfg` and serve it: API_HOST (127.0.0.1), API_PORT (8000), API_KEY, API_MODEL_NAME."""
    import os
    import sys

    import uvicorn

    from .engine import build_engine

    loaded, engine = build_engine(cfg)
    name = os.environ.get("API_MODEL_NAME") or loaded.name
    host, port = os.environ.get("API_HOST", "127.0.0.1"), int(os.environ.get("API_PORT", "8000"))
    api_key = os.environ.get("API_KEY") or None
    app = create_app(engine, loaded, cfg.generating, name, api_key)
    kind = "reward model" if not engine.can_generate else f"template {loaded.template.name}"
    if not api_key and not _is_loopback(host):
        print(f"WARNING: serving on {host} without API_KEY: anyone who can reach port {port} can use this model. "
              "Set API_KEY (clients then send `Authorization: Bearer <API_KEY>`) or bind API_HOST=127.0.0.1.",
              file=sys.stderr, flush=True)
    print(f"Serving {name} ({kind}) at http://{host}:{port}/v1 — docs at http://{host}:{port}/docs", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=os.environ.get("API_LOG_LEVEL", "warning"))
