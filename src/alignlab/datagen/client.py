"""The one client of OpenAI-compatible chat endpoints: a concurrency limit, retries with exponential
backoff, jitter and Retry-After, a timeout per request, and the token usage and cost of a run."""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError

RETRYABLE_STATUS = frozenset({408, 409, 425, 429})  # and every 5xx
FATAL_STATUS = {401: "the API key was refused", 403: "access is forbidden", 404: "no such endpoint or model"}
MAX_BACKOFF_S = 60.0


class RequestFailed(Exception):
    """A request that gave no usable answer; its reason is recorded, never written as an answer."""


class EndpointError(ConfigError):
    """An endpoint that refuses every request (wrong key, URL or model): the run stops."""


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass
class Reply:
    text: str
    finish_reason: str | None
    usage: dict[str, int]


def retry_delay(attempt: int, backoff: float, retry_after: float | None, rng: random.Random) -> float:
    """Seconds to wait before retry number `attempt` (0 = the first retry): backoff * 2**attempt with
    equal jitter (half fixed, half random), at most MAX_BACKOFF_S, and never less than Retry-After."""
    delay = min(backoff * 2 ** attempt, MAX_BACKOFF_S) * (0.5 + rng.random() / 2)
    return max(delay, retry_after or 0.0)


def parse_retry_after(value: str | None) -> float | None:
    """A Retry-After header as seconds: a number of seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


@dataclass
class Ledger:
    """Requests, retries and tokens of a run by model, and their cost from `api_prices`."""

    prices: dict[str, dict] | None = None
    requests: int = 0
    retries: int = 0
    tokens: dict[str, dict[str, int]] = field(default_factory=dict)

    def check_prices(self, models: list[str]) -> None:
        """Every model the run calls has a price (when a price table is given)."""
        if self.prices is None:
            return
        for model in models:
            price = self.prices.get(model)
            if not isinstance(price, dict) or not all(isinstance(price.get(k), (int, float)) for k in ("input", "output")):
                raise ConfigError(f"`api_prices` has no price for model `{model}` (got {price!r}): add "
                                  f"`{model}: {{input: X, output: Y}}` in USD per million tokens, or remove `api_prices`.")

    def add(self, model: str, usage: dict[str, Any]) -> None:
        counts = self.tokens.setdefault(model, {"prompt_tokens": 0, "completion_tokens": 0})
        for key in counts:
            value = usage.get(key)
            counts[key] += value if isinstance(value, int) else 0

    def total(self, key: str) -> int:
        return sum(counts[key] for counts in self.tokens.values())

    def cost(self) -> float | None:
        """USD spent by this run, or None without a price table."""
        if self.prices is None:
            return None
        return sum(counts["prompt_tokens"] * self.prices[model]["input"] / 1e6
                   + counts["completion_tokens"] * self.prices[model]["output"] / 1e6
                   for model, counts in self.tokens.items())

    def summary(self) -> dict[str, Any]:
        return {"requests": self.requests, "retries": self.retries, "prompt_tokens": self.total("prompt_tokens"),
                "completion_tokens": self.total("completion_tokens"), "tokens_by_model": self.tokens,
                "cost_usd": self.cost()}


def _error_message(response) -> str:
    try:
        error = response.json().get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
    except (ValueError, AttributeError):
        pass
    return response.text[:300].strip() or response.reason_phrase


class ChatEndpoint:
    """One OpenAI-compatible server: at most `max_concurrency` requests in flight, each timed out after
    `request_timeout` seconds and retried up to `max_retries` times on 429, 5xx, timeouts, connection
    errors and malformed bodies. Other 4xx fail the row; 401, 403 and 404 stop the run."""

    def __init__(self, base_url: str, model: str, api_key: str | None, sampling: dict[str, Any], ledger: Ledger, *,
                 max_concurrency: int, request_timeout: float, max_retries: int, retry_backoff: float,
                 key_env: str = "OPENAI_API_KEY"):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.sampling, self.ledger = model, sampling, ledger
        self.max_concurrency, self.timeout = max_concurrency, request_timeout
        self.max_retries, self.backoff, self.key_env = max_retries, retry_backoff, key_env
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._limit = asyncio.Semaphore(max_concurrency)
        self._rng = random.Random()
        self._http = None

    @classmethod
    def from_config(cls, cfg, ledger: Ledger, base_url: str | None = None, model: str | None = None,
                    sampling: dict[str, Any] | None = None) -> ChatEndpoint:
        """The endpoint of `api_base`/`api_model` (or the given ones) with the config's limits."""
        d = cfg.datagen
        for key, ok, allowed in (("max_concurrency", d.max_concurrency >= 1, "an integer >= 1"),
                                 ("request_timeout", d.request_timeout > 0, "a number of seconds > 0"),
                                 ("max_retries", d.max_retries >= 0, "an integer >= 0"),
                                 ("retry_backoff", d.retry_backoff >= 0, "a number of seconds >= 0")):
            if not ok:
                raise ConfigError(f"`{key}: {getattr(d, key)}` is out of range: use {allowed}.")
        return cls(base_url or d.api_base, model or d.api_model, os.environ.get(d.api_key_env),
                   request_fields(cfg) if sampling is None else sampling, ledger,
                   max_concurrency=d.max_concurrency, request_timeout=d.request_timeout, max_retries=d.max_retries,
                   retry_backoff=d.retry_backoff, key_env=d.api_key_env)

    async def chat(self, messages: list[dict], model: str | None = None, **fields) -> Reply:
        """The answer to `messages` (sampling fields override the endpoint's); RequestFailed when none came."""
        body = {**self.sampling, **fields, "model": model or self.model, "messages": messages}
        retry_after = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.ledger.retries += 1
                await asyncio.sleep(retry_delay(attempt - 1, self.backoff, retry_after, self._rng))
            try:
                return await self._attempt(body)
            except _Retryable as e:
                reason, retry_after = str(e), e.retry_after
        raise RequestFailed(f"{reason} (gave up after {self.max_retries + 1} attempts)")

    async def _attempt(self, body: dict) -> Reply:
        import httpx

        if self._http is None:
            self._http = httpx.AsyncClient(headers=self._headers, timeout=None,
                                           limits=httpx.Limits(max_connections=self.max_concurrency))
        async with self._limit:
            self.ledger.requests += 1
            try:
                async with asyncio.timeout(self.timeout):
                    response = await self._http.post(self.url, json=body)
            except TimeoutError:
                raise _Retryable(f"timed out after {self.timeout:g}s") from None
            except httpx.HTTPError as e:
                raise _Retryable(f"connection error ({type(e).__name__}: {e})") from None
        status = response.status_code
        if status in FATAL_STATUS:
            raise EndpointError(f"{self.url} answered HTTP {status} ({FATAL_STATUS[status]}) for model "
                                f"`{body['model']}`: {_error_message(response)}. Check `api_base`, `api_model` "
                                f"and the key in env {self.key_env} (`api_key_env`).")
        if status in RETRYABLE_STATUS or status >= 500:
            raise _Retryable(f"HTTP {status}: {_error_message(response)}",
                             parse_retry_after(response.headers.get("retry-after")))
        if status != 200:
            raise RequestFailed(f"HTTP {status}: {_error_message(response)}")
        try:
            data = response.json()
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise _Retryable(f"malformed response body: {response.text[:120]!r}") from None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        self.ledger.add(body["model"], usage)
        return Reply(text=text if isinstance(text, str) else str(text), finish_reason=choice.get("finish_reason"),
                     usage={k: usage.get(k, 0) for k in ("prompt_tokens", "completion_tokens")})

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def request_fields(cfg) -> dict[str, Any]:
    """The sampling fields of a request from the generating keys; top_k and repetition_penalty (not OpenAI
    fields) only when set, and `do_sample: false` as temperature 0."""
    g = cfg.generating
    fields: dict[str, Any] = {"temperature": g.temperature if g.do_sample else 0.0, "top_p": g.top_p,
                              "max_tokens": g.max_new_tokens}
    for key in ("top_k", "repetition_penalty"):
        if key in cfg.resolved:
            fields[key] = getattr(g, key)
    return fields
