"""The engine interface: what chat, api, compare and predict need of whatever generates or scores.

An engine generates (`submit` one answer with a callback per new piece; `stream` and `generate` are
built on it) or scores (`score` whole texts with a reward model); `can_generate` says which. The HF
engine (engine.py) and the vLLM engine (vllm_engine.py) implement it; neither imports the other.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 1024
    do_sample: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None  # None: none; k: each token's logprob and its k most likely alternatives

    @classmethod
    def from_generating_args(cls, gen, **overrides) -> SamplingParams:
        """The config's generating keys, with per-request overrides (None means keep)."""
        values = dict(max_new_tokens=gen.max_new_tokens, do_sample=gen.do_sample, temperature=gen.temperature,
                      top_p=gen.top_p, top_k=gen.top_k, repetition_penalty=gen.repetition_penalty)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values["temperature"] == 0:  # OpenAI's convention for greedy decoding
            values.update(do_sample=False, temperature=1.0)
        values["stop"] = tuple(values.get("stop") or ())
        return cls(**values)


@dataclass
class Event:
    """What a request's callback receives: new text, and the end of the answer when `finished`."""

    delta: str
    finished: bool = False
    finish_reason: str | None = None  # stop | length | cancelled | error
    completion_tokens: int = 0
    error: str | None = None
    logprobs: list[TokenLogprob] | None = None  # the tokens behind `delta`, when the request asked for them


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token id, logprob), most likely first


class Engine:
    """Base of every engine: `submit` and `close` (generating engines) or `score` (scorers)."""

    can_generate = True

    def submit(self, prompt_ids: list[int], params: SamplingParams, on_event: Callable[[Event], None]):
        """Queue one answer; `on_event` is called (from the engine's thread) with every new piece.
        Returns a handle with `cancel()`."""
        raise NotImplementedError(f"{type(self).__name__} does not generate.")

    def score(self, texts: list[str], max_length: int | None = None) -> list[float]:
        """A reward model's score of each whole text."""
        raise NotImplementedError(f"{type(self).__name__} does not score.")

    def close(self) -> None:
        """Stop the engine's thread or loop."""

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[Event]:
        """Events of one answer as they are produced (blocking iterator); leaving early cancels it."""
        events: queue.Queue[Event] = queue.Queue()
        handle = self.submit(prompt_ids, params, events.put)
        try:
            while True:
                event = events.get()
                yield event
                if event.finished:
                    return
        finally:
            handle.cancel()

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[dict]:
        """Blocking: submit every prompt at once and return text, token count and finish reason of each."""
        results: list[dict] = [{"text": "", "finish_reason": None, "completion_tokens": 0} for _ in prompts]
        done = [threading.Event() for _ in prompts]

        def collect(i):
            def on_event(event: Event):
                results[i]["text"] += event.delta
                if event.finished:
                    results[i].update(finish_reason=event.finish_reason, completion_tokens=event.completion_tokens,
                                      error=event.error)
                    done[i].set()
            return on_event

        for i, ids in enumerate(prompts):
            self.submit(ids, params, collect(i))
        for event in done:
            event.wait()
        return results
