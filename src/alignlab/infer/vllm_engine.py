"""`infer_backend: vllm`: the same submit/stream/generate interface as HFEngine over vLLM's
AsyncLLMEngine (continuous batching, paged KV cache) on a CUDA GPU. LoRA adapters are served with
vLLM's LoRA support; the prompt ids come from our template, so serving matches training.
"""

from __future__ import annotations

import asyncio
import threading
import uuid

from ..config import ConfigError
from .protocol import Engine, Event, SamplingParams, TokenLogprob


class _Handle:
    def __init__(self, engine: VllmEngine, request_id: str):
        self.engine, self.request_id, self.finished = engine, request_id, False

    def cancel(self) -> None:
        if not self.finished:
            asyncio.run_coroutine_threadsafe(self.engine.vllm.abort(self.request_id), self.engine.loop)


class VllmEngine(Engine):
    """vLLM loads the weights itself: no Hugging Face copy of the model is loaded beside it."""

    @classmethod
    def launch(cls, cfg):
        """(LoadedModel without weights, the engine) for `cfg`."""
        from ..model.run_loader import LoadedModel, load_tokenizer_and_template

        tokenizer, template = load_tokenizer_and_template(cfg)
        loaded = LoadedModel(None, tokenizer, template, cfg.model.model_name_or_path.rstrip("/").split("/")[-1])
        return loaded, cls(cfg, loaded)

    def __init__(self, cfg, loaded):
        try:
            from vllm import AsyncEngineArgs, AsyncLLMEngine
        except ImportError:
            raise ConfigError("`infer_backend: vllm` needs vLLM on a CUDA GPU: pip install vllm "
                             "(or use `infer_backend: huggingface`).") from None
        from ..model.adapter import adapter_paths

        adapters = adapter_paths(cfg.model)
        if len(adapters) > 1:
            raise ConfigError("vLLM serves one LoRA adapter; merge the others first with `alignlab export`.")
        args = AsyncEngineArgs(model=cfg.model.model_name_or_path, trust_remote_code=cfg.model.trust_remote_code,
                               dtype=cfg.model.infer_dtype, max_model_len=cfg.model.vllm_maxlen,
                               gpu_memory_utilization=cfg.model.vllm_gpu_util,
                               enforce_eager=cfg.model.vllm_enforce_eager, enable_lora=bool(adapters))
        self.tokenizer, self.template = loaded.tokenizer, loaded.template
        self.context_len = cfg.model.vllm_maxlen
        self.max_batch = None
        self.stats = {"active": 0, "queued": 0, "finished": 0, "cancelled": 0}
        self.lora = None
        if adapters:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("default", 1, adapters[0])
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="alignlab-vllm", daemon=True).start()
        self.vllm = asyncio.run_coroutine_threadsafe(self._start(AsyncLLMEngine, args), self.loop).result()
        self.stop_ids = loaded.template.stop_token_ids(loaded.tokenizer)

    @staticmethod
    async def _start(engine_class, args):
        return engine_class.from_engine_args(args)

    def submit(self, prompt_ids: list[int], params: SamplingParams, on_event) -> _Handle:
        from vllm import SamplingParams as VllmParams

        sampling = VllmParams(
            n=1, max_tokens=params.max_new_tokens, temperature=params.temperature if params.do_sample else 0.0,
            top_p=params.top_p if params.do_sample else 1.0, top_k=params.top_k or -1,
            repetition_penalty=params.repetition_penalty, stop=list(params.stop) or None,
            stop_token_ids=self.stop_ids, seed=params.seed, skip_special_tokens=True, logprobs=params.logprobs)
        handle = _Handle(self, uuid.uuid4().hex)

        async def run():
            self.stats["active"] += 1
            sent, tokens = "", 0
            try:
                async for output in self.vllm.generate({"prompt_token_ids": prompt_ids}, sampling, handle.request_id,
                                                       lora_request=self.lora):
                    result = output.outputs[0]
                    logprobs = _logprobs(result, tokens, params.logprobs)
                    delta, sent, tokens = result.text[len(sent):], result.text, len(result.token_ids)
                    if output.finished:
                        reason = "length" if result.finish_reason == "length" else "stop"
                        self.stats["finished"] += 1
                        on_event(Event(delta, True, reason, tokens, logprobs=logprobs))
                        return
                    if delta or logprobs:
                        on_event(Event(delta, completion_tokens=tokens, logprobs=logprobs))
                self.stats["cancelled"] += 1
                on_event(Event("", True, "cancelled", tokens))
            except Exception as e:  # noqa: BLE001 - report to the request, keep serving
                on_event(Event("", True, "error", tokens, f"{type(e).__name__}: {e}"))
            finally:
                handle.finished = True
                self.stats["active"] -= 1

        asyncio.run_coroutine_threadsafe(run(), self.loop)
        return handle

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def _logprobs(result, start: int, top: int | None) -> list[TokenLogprob] | None:
    """vLLM's per-token logprob dicts from token `start` on, as TokenLogprobs (None when not asked)."""
    if top is None or result.logprobs is None:
        return None
    entries = []
    for token, options in zip(result.token_ids[start:], result.logprobs[start:]):
        ranked = sorted(options.items(), key=lambda item: -item[1].logprob)[:top]
        entries.append(TokenLogprob(token, options[token].logprob, tuple((t, o.logprob) for t, o in ranked)))
    return entries
