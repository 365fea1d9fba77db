"""The Hugging Face inference engine: dynamic batching of concurrent requests in one decode loop.

A background thread owns the model. Each loop iteration admits waiting requests (their prompts are
prefilled together and their KV caches left-padded into the running batch), then decodes one token
for every running sequence. Sequences leave the batch as soon as they stop, so requests join and
leave between decode steps. Every new piece of text is handed to the request's callback, which
makes streaming and blocking use the same path.

Admission is strictly first come, first served: waiting requests enter the batch in the order they
were submitted, as slots free up. With `logprobs` set, each generated token's log-probability under
the model (before penalties and temperature) and its most likely alternatives travel with the text.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..data.collate import pad_rows
from ..model.run_loader import load_inference_model
from .protocol import Engine, Event, SamplingParams, TokenLogprob

__all__ = ["Engine", "Event", "HFEngine", "RewardScorer", "SamplingParams", "TokenLogprob", "build_engine",
           "split_reasoning"]


def held_back(text: str, words) -> int:
    """How many trailing characters of `text` could start one of `words` (kept until resolved)."""
    keep = 0
    for word in words:
        for k in range(min(len(word) - 1, len(text)), keep, -1):
            if text.endswith(word[:k]):
                keep = k
                break
    return keep


def split_reasoning(template, text: str, final: bool) -> tuple[str | None, str]:
    """(reasoning, answer) of a reasoning template's output; reasoning None when thinking is off."""
    if not getattr(template, "reasoning", False) or not template.enable_thinking:
        return None, text
    open_, close = (w.strip() for w in template.thought_words)
    body = text.lstrip()
    if not final and open_.startswith(body):  # may still become the opening word
        return "", ""
    if body.startswith(open_):
        body = body[len(open_):]
    elif close not in body:
        return "", text
    if close in body:
        reasoning, answer = body.split(close, 1)
        return reasoning.strip("\n"), answer.lstrip("\n")
    if final:
        return body.strip("\n"), ""
    return body[:len(body) - held_back(body, [close])].lstrip("\n").rstrip("\n"), ""


@dataclass
class Sequence:
    """One answer being generated; `cancel()` frees its batch slot at the next decode step."""

    prompt_ids: list[int]
    params: SamplingParams
    on_event: Callable[[Event], None]
    token_ids: list[int] = field(default_factory=list)
    emitted: str = ""
    finished: bool = False
    cancelled: bool = False
    generator: torch.Generator | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)  # of tokens whose text is not yet handed out

    def cancel(self) -> None:
        self.cancelled = True

    @property
    def position(self) -> int:
        """Position of the last sampled token (the one not yet in the KV cache)."""
        return len(self.prompt_ids) + len(self.token_ids) - 1


@dataclass
class _Batch:
    rows: list[Sequence] = field(default_factory=list)
    cache: object = None
    mask: torch.Tensor | None = None


def _left_pad(x: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - x.shape[dim]
    if missing == 0:
        return x
    pad = [0, 0] * (x.dim() - 1 - dim % x.dim()) + [missing, 0]
    return F.pad(x, pad)


class HFEngine(Engine):
    """Dynamic-batching generation with a Hugging Face causal LM (see the module docstring)."""

    can_generate = True

    def __init__(self, model, tokenizer, template, *, max_batch: int = 32, context_len: int | None = None,
                 seed: int = 0):
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.max_batch = max_batch
        self.context_len = context_len or getattr(model.config, "max_position_embeddings", None) or 4096
        self.stop_ids = set(template.stop_token_ids(tokenizer))
        self.device = next(model.parameters()).device
        self._pending: deque[Sequence] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._generator = torch.Generator().manual_seed(seed)
        self.stats = {"active": 0, "queued": 0, "finished": 0, "cancelled": 0, "decode_steps": 0}

    # ---- public interface ---------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams, on_event: Callable[[Event], None]) -> Sequence:
        """Queue one answer; `on_event` is called from the engine thread with every new piece."""
        if len(prompt_ids) + 1 > self.context_len:
            raise ValueError(f"The prompt has {len(prompt_ids)} tokens; the model's context is {self.context_len}.")
        seq = Sequence(list(prompt_ids), params, on_event)
        if params.seed is not None:
            seq.generator = torch.Generator().manual_seed(params.seed)
        with self._cond:
            if self._closed:
                raise RuntimeError("The engine is closed.")
            self._pending.append(seq)
            self.stats["queued"] = len(self._pending)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="alignlab-engine", daemon=True)
                self._thread.start()
            self._cond.notify()
        return seq

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ---- the decode loop ----------------------------------------------------------------
    def _loop(self) -> None:
        batch = _Batch()
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._pending and not batch.rows and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        break
                    new = []
                    while self._pending and len(batch.rows) + len(new) < self.max_batch:
                        seq = self._pending.popleft()
                        if seq.cancelled:
                            self._finish(seq, "cancelled")
                        else:
                            new.append(seq)
                    self.stats["queued"] = len(self._pending)
                try:
                    if new:
                        self._prefill(batch, new)
                    if batch.rows:
                        self._decode(batch)
                except Exception as e:  # noqa: BLE001 - fail the requests, keep serving
                    for seq in batch.rows + new:
                        if not seq.finished:
                            self._finish(seq, "error", error=f"{type(e).__name__}: {e}")
                    batch = _Batch()
                self.stats["active"] = len(batch.rows)

    def _forward(self, ids, mask, positions, cache):
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=positions.to(self.device), past_key_values=cache, use_cache=True,
                         logits_to_keep=1)
        return out.logits[:, -1, :].float().cpu(), out.past_key_values

    def _prefill(self, batch: _Batch, new: list[Sequence]) -> None:
        from transformers import DynamicCache

        ids, mask = pad_rows([s.prompt_ids for s in new], self.tokenizer.pad_token_id)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits, cache = self._forward(ids, mask, positions, DynamicCache(config=self.model.config))
        self._merge(batch, new, cache, mask)
        self._advance(batch, new, logits)

    def _decode(self, batch: _Batch) -> None:
        rows = batch.rows
        ids = torch.tensor([[s.token_ids[-1]] for s in rows])
        positions = torch.tensor([[s.position] for s in rows])
        batch.mask = torch.cat([batch.mask, torch.ones(len(rows), 1, dtype=batch.mask.dtype)], dim=1)
        logits, batch.cache = self._forward(ids, batch.mask, positions, batch.cache)
        self.stats["decode_steps"] += 1
        self._advance(batch, rows, logits)

    def _merge(self, batch: _Batch, new: list[Sequence], cache, mask: torch.Tensor) -> None:
        """Left-pad the running and the new KV caches to one length and stack them."""
        if not batch.rows:
            batch.rows, batch.cache, batch.mask = list(new), cache, mask
            return
        length = max(batch.mask.shape[1], mask.shape[1])
        for old, add in zip(batch.cache.layers, cache.layers):
            old.keys = torch.cat([_left_pad(old.keys, length, -2), _left_pad(add.keys, length, -2)])
            old.values = torch.cat([_left_pad(old.values, length, -2), _left_pad(add.values, length, -2)])
        batch.mask = torch.cat([_left_pad(batch.mask, length, -1), _left_pad(mask, length, -1)])
        batch.rows += new

    def _advance(self, batch: _Batch, rows: list[Sequence], logits: torch.Tensor) -> None:
        """Sample one token per row, hand out new text, and drop the rows that finished."""
        logps = logits.log_softmax(-1) if any(s.params.logprobs is not None for s in rows) else None
        tokens = self._sample(logits, rows)
        for i, (seq, token) in enumerate(zip(rows, tokens.tolist())):
            if seq.cancelled:
                self._finish(seq, "cancelled")
                continue
            seq.token_ids.append(token)
            if seq.params.logprobs is not None:
                top = logps[i].topk(seq.params.logprobs) if seq.params.logprobs else None
                seq.logprobs.append(TokenLogprob(token, float(logps[i, token]), tuple(
                    zip(top.indices.tolist(), top.values.tolist())) if top is not None else ()))
            self._emit(seq, stopped=token in self.stop_ids)
        keep = [i for i, s in enumerate(batch.rows) if not s.finished]
        if len(keep) < len(batch.rows):
            index = torch.tensor(keep, dtype=torch.long)
            batch.rows = [batch.rows[i] for i in keep]
            batch.mask = batch.mask[index]
            start = int(batch.mask.any(0).long().argmax()) if keep else 0
            batch.mask = batch.mask[:, start:]
            for layer in batch.cache.layers:
                layer.keys = layer.keys[index.to(layer.keys.device), :, start:]
                layer.values = layer.values[index.to(layer.values.device), :, start:]
            if not keep:
                batch.cache, batch.mask = None, None

    def _emit(self, seq: Sequence, stopped: bool) -> None:
        ids = seq.token_ids[:-1] if stopped else seq.token_ids
        if stopped and seq.logprobs:
            seq.logprobs.pop()  # the stop token is not part of the answer
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        reason = "stop" if stopped else None
        hits = [text.find(w) for w in seq.params.stop if w and w in text]
        if hits:
            text, reason = text[:min(hits)], "stop"
        elif reason is None and (len(seq.token_ids) >= seq.params.max_new_tokens
                                 or seq.position + 1 >= self.context_len):
            reason = "length"
        if reason is None:
            text = text.rstrip("\ufffd")  # an incomplete multi-byte character
            text = text[:len(text) - held_back(text, seq.params.stop)]
        delta = text[len(seq.emitted):] if text.startswith(seq.emitted) else ""
        seq.emitted += delta
        if reason:
            self._finish(seq, reason, delta)
        elif delta:
            seq.on_event(Event(delta, completion_tokens=len(seq.token_ids), logprobs=self._take_logprobs(seq)))

    @staticmethod
    def _take_logprobs(seq: Sequence) -> list[TokenLogprob] | None:
        if seq.params.logprobs is None:
            return None
        taken, seq.logprobs = seq.logprobs, []
        return taken

    def _finish(self, seq: Sequence, reason: str, delta: str = "", error: str | None = None) -> None:
        seq.finished = True
        self.stats["finished" if reason != "cancelled" else "cancelled"] += 1
        seq.on_event(Event(delta, True, reason, len(seq.token_ids), error, self._take_logprobs(seq)))

    def _sample(self, logits: torch.Tensor, rows: list[Sequence]) -> torch.Tensor:
        """Per-row repetition penalty, temperature, top-k and top-p, then sampling or argmax."""
        for i, seq in enumerate(rows):
            penalty = seq.params.repetition_penalty
            if penalty != 1.0:
                seen = torch.tensor(seq.prompt_ids + seq.token_ids).unique()
                row = logits[i, seen]
                logits[i, seen] = torch.where(row > 0, row / penalty, row * penalty)
        tokens = logits.argmax(-1)
        sampled = [i for i, s in enumerate(rows) if s.params.do_sample]
        if not sampled:
            return tokens
        sub = logits[sampled] / torch.tensor([[rows[i].params.temperature] for i in sampled])
        ordered, order = sub.sort(-1, descending=True)
        rank = torch.arange(sub.shape[-1]).expand_as(sub)
        top_k = torch.tensor([[rows[i].params.top_k or sub.shape[-1]] for i in sampled])
        probs = ordered.softmax(-1)
        before = probs.cumsum(-1) - probs  # mass of the tokens ranked above
        top_p = torch.tensor([[rows[i].params.top_p] for i in sampled])
        drop = (rank >= top_k) | ((before >= top_p) & (rank > 0))
        probs = probs.masked_fill(drop, 0.0)
        for j, i in enumerate(sampled):
            pick = torch.multinomial(probs[j], 1, generator=rows[i].generator or self._generator)
            tokens[i] = order[j, pick]
        return tokens


class RewardScorer(Engine):
    """Scores whole texts with a value-head reward model (the last token's value), thread-safe."""

    can_generate = False

    def __init__(self, reward_model, tokenizer, batch_size: int = 16):
        self.model, self.tokenizer, self.batch_size = reward_model, tokenizer, batch_size
        self._lock = threading.Lock()
        self.stats = {"scored": 0}

    def score(self, texts: list[str], max_length: int | None = None) -> list[float]:
        rows = [self.tokenizer.encode(t, add_special_tokens=False)[:max_length] or [self.tokenizer.pad_token_id]
                for t in texts]
        with self._lock:
            scores = self.model.score_rows(rows, self.tokenizer.pad_token_id, self.batch_size).tolist()
            self.stats["scored"] += len(texts)
        return scores


def build_engine(cfg):  # -> (LoadedModel, Engine)
    """The engine `infer_backend` asks for, over the model of `cfg`; reward models get a scorer."""
    if cfg.generating.num_beams > 1:
        from ..config import ConfigError

        raise ConfigError(f"num_beams: {cfg.generating.num_beams} — chat and api generate token by token (streamed, "
                          "batched) and cannot beam-search. Set num_beams: 1 here; beam search is available in "
                          "`do_predict` with `predict_with_generate` (stage sft).")
    if cfg.model.infer_backend == "vllm":
        from .vllm_engine import VllmEngine

        return VllmEngine.launch(cfg)
    loaded = load_inference_model(cfg)
    if loaded.reward_model is not None:
        return loaded, RewardScorer(loaded.reward_model, loaded.tokenizer)
    return loaded, HFEngine(loaded.model, loaded.tokenizer, loaded.template, max_batch=cfg.model.infer_max_batch)

