"""Batched generation for evaluation: left-padded prompts decoded together, stop on the template's
stop tokens, progress on stderr."""

from __future__ import annotations

import sys
import time

import torch

from ..data.collate import pad_rows


def load_for_inference(model_dir: str, adapter: str | None = None):
    """Model, tokenizer and template of a run directory (the template its run_config.yaml names)."""
    from ..config import load_config
    from ..model.run_loader import load_inference_model, run_settings

    base = (run_settings(adapter) or {}).get("model_name_or_path", model_dir) if adapter else model_dir
    loaded = load_inference_model(load_config([], defaults={"model_name_or_path": base,
                                                             "adapter_name_or_path": adapter}))
    return loaded.model, loaded.tokenizer, loaded.template


@torch.inference_mode()
def generate_batched(model, tokenizer, template, prompts: list[list[int]], *, batch_size: int = 32,
                     num_samples: int = 1, desc: str = "generating", progress: bool = True,
                     **gen_kwargs) -> list[list[str]]:
    """Answers (decoded, special tokens dropped) for each prompt: `num_samples` per prompt; progress
    on stderr unless `progress` is false."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[list[str]] = [[] for _ in prompts]
    pad = tokenizer.pad_token_id
    stop = template.stop_token_ids(tokenizer)
    device = next(model.parameters()).device
    start = time.time()
    for done in range(0, len(order), batch_size):
        chunk = order[done:done + batch_size]
        ids, mask = pad_rows([prompts[i] for i in chunk], pad, device=device)
        width = ids.shape[1]
        out = model.generate(input_ids=ids, attention_mask=mask, num_return_sequences=num_samples,
                             eos_token_id=stop, pad_token_id=pad, **gen_kwargs)
        texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        for k, i in enumerate(chunk):
            answers[i] = texts[k * num_samples:(k + 1) * num_samples]
        finished = min(done + batch_size, len(order))
        elapsed = time.time() - start
        eta = elapsed / finished * (len(order) - finished)
        if progress:
            print(f"\r{desc}: {finished}/{len(order)} prompts, {elapsed:.0f}s elapsed, ETA {eta:.0f}s",
                  end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return answers
