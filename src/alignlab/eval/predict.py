"""`do_predict` + `predict_with_generate` (stage sft): answers for `eval_dataset` (or `dataset`),
streamed to generated_predictions.jsonl in data order as they are produced, and metrics to
predict_results.json.

A restarted predict resumes as training does: the rows already in generated_predictions.jsonl are
kept when generated_predictions.settings.json says they came from the same model and generating
settings and each row's prompt and label are those of the data row at its index; a torn last line
(a kill mid-write) is dropped; only the missing rows are generated. Sampled rows use seed
`seed + row index`, so an interrupted run finishes with the file an uninterrupted one writes.
`num_beams` (or `eval_num_beams`, which wins here) > 1 decodes with HF `generate`'s beam search.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from ..files import write_atomic
from ..infer.engine import HFEngine, SamplingParams
from .generate import generate_batched
from .metrics import compute_metrics

logger = logging.getLogger(__name__)
PREDICTIONS = "generated_predictions.jsonl"
SETTINGS = "generated_predictions.settings.json"


def model_fingerprint(model) -> str:
    """A cheap digest of the weights: every parameter's name, shape and up to 64 evenly spaced values."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        flat = param.detach().reshape(-1)
        sample = flat[::max(1, flat.numel() // 64)][:64].float().cpu()
        digest.update(f"{name}{tuple(param.shape)}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()


def predict_settings(cfg, model, num_beams: int) -> dict:
    """What decides the answers besides the prompts: the weights and the generating keys."""
    gen = cfg.generating
    settings = {"model": model_fingerprint(model), "num_beams": num_beams, "max_new_tokens": gen.max_new_tokens,
                "do_sample": gen.do_sample, "repetition_penalty": gen.repetition_penalty}
    if gen.do_sample:
        settings.update(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k, seed=cfg.training.seed)
    if num_beams > 1:
        settings["length_penalty"] = gen.length_penalty
    return settings


def finished_rows(out: Path, settings: dict, expected: list[tuple[str, str]]) -> list[dict]:
    """The rows of a previous run to keep (see the module docstring); the files are left holding
    exactly those rows and the current settings, ready to be appended to."""
    path, settings_path = out / PREDICTIONS, out / SETTINGS
    kept: list[dict] = []
    size = 0
    previous = json.loads(settings_path.read_text()) if settings_path.is_file() else None
    if previous == settings and path.is_file():
        with open(path, "rb") as f:
            for line in f:
                try:
                    row = json.loads(line) if line.endswith(b"\n") else None
                except ValueError:
                    row = None
                if row is None or len(kept) >= len(expected) \
                        or (row.get("prompt"), row.get("label")) != expected[len(kept)]:
                    break
                kept.append(row)
                size += len(line)
    elif previous is not None and path.is_file():
        changed = sorted(k for k in {*settings, *previous} if settings.get(k) != previous.get(k))
        logger.warning("%s was generated with other settings (%s differ): generating every row again.",
                       path, ", ".join(changed))
    with open(path, "ab") as f:  # keep the rows that match, drop the rest (a torn last line included)
        f.truncate(size)
    if previous != settings:
        write_atomic(settings_path, json.dumps(settings, indent=2))
    if kept:
        logger.warning("Resuming predict: %d of %d rows are already in %s.", len(kept), len(expected), path)
    return kept


def _answers_in_order(engine: HFEngine, prompts: list[list[int]], params_of, window: int) -> Iterator[str]:
    """Each prompt's answer in prompt order, with at most `window` prompts in the engine at once."""
    texts, errors = [""] * len(prompts), [None] * len(prompts)
    done = [threading.Event() for _ in prompts]

    def collect(i):
        def on_event(event):
            texts[i] += event.delta
            if event.finished:
                errors[i] = event.error
                done[i].set()
        return on_event

    submitted = 0
    for i in range(len(prompts)):
        while submitted < len(prompts) and submitted < i + window:
            engine.submit(prompts[submitted], params_of(submitted), collect(submitted))
            submitted += 1
        done[i].wait()
        if errors[i]:
            raise RuntimeError(f"Generation failed: {errors[i]}")
        yield texts[i]


def _beam_answers(cfg, model, tokenizer, template, prompts: list[list[int]], num_beams: int,
                  seed: int) -> Iterator[str]:
    """Answers by HF beam search, `infer_max_batch` prompts per `generate` call, in prompt order;
    a sampled chunk draws from seed `seed + its first index`."""
    import torch

    gen, size = cfg.generating, cfg.model.infer_max_batch
    kwargs = dict(num_beams=num_beams, max_new_tokens=gen.max_new_tokens, do_sample=gen.do_sample,
                  repetition_penalty=gen.repetition_penalty, length_penalty=gen.length_penalty)
    if gen.do_sample:
        kwargs.update(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k)
    for first in range(0, len(prompts), size):
        chunk = prompts[first:first + size]
        torch.manual_seed(seed + first)
        yield from (a[0] for a in generate_batched(model, tokenizer, template, chunk, batch_size=size,
                                                   progress=False, **kwargs))


def run_predict(cfg, model, tokenizer, template) -> dict:
    """Generate for every prompt of the evaluation data not already answered; return the `predict_*` metrics."""
    from ..data import get_dataset

    data_args = cfg.data
    names = data_args.eval_dataset or data_args.dataset
    data_args = replace(data_args, dataset=names, eval_dataset=None, val_size=0.0, packing=False)
    data = get_dataset(data_args, "predict", tokenizer, template, seed=cfg.training.seed)
    if data.report.counts:
        logger.warning("Rows skipped while preparing the prediction data:\n%s", data.report.summary())
    rows = data.train
    out = Path(cfg.training.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    prompts = [list(ids) for ids in rows["input_ids"]]
    expected = [(tokenizer.decode(ids, skip_special_tokens=False), tokenizer.decode(labels, skip_special_tokens=True))
                for ids, labels in zip(prompts, rows["labels"])]
    num_beams = cfg.data.eval_num_beams or cfg.generating.num_beams
    model = model.eval()
    kept = finished_rows(out, predict_settings(cfg, model, num_beams), expected)
    predicts = [row["predict"] for row in kept]
    todo = prompts[len(kept):]
    engine, seed = None, cfg.training.seed + len(kept)
    if num_beams > 1:
        answers = _beam_answers(cfg, model, tokenizer, template, todo, num_beams, seed)
    else:
        params = SamplingParams.from_generating_args(cfg.generating)
        engine = HFEngine(model, tokenizer, template, max_batch=cfg.model.infer_max_batch)
        answers = _answers_in_order(engine, todo, lambda i: replace(params, seed=seed + i) if params.do_sample
                                    else params, 4 * cfg.model.infer_max_batch)
    start = time.time()
    try:
        with open(out / PREDICTIONS, "a", encoding="utf-8") as f:
            for (prompt, label), answer in zip(expected[len(kept):], answers):
                f.write(json.dumps({"prompt": prompt, "predict": answer, "label": label}, ensure_ascii=False) + "\n")
                f.flush()  # whole rows reach the file as they finish; a kill tears at most the last one
                predicts.append(answer)
                done, elapsed = len(predicts) - len(kept), time.time() - start
                print(f"\rpredicting: {len(predicts)}/{len(rows)}, {elapsed:.0f}s elapsed, "
                      f"ETA {elapsed / done * (len(todo) - done):.0f}s", end="", file=sys.stderr, flush=True)
            os.fsync(f.fileno())
        print(file=sys.stderr)
    finally:
        if engine is not None:
            engine.close()
    labels = [label for _, label in expected]
    metrics = {f"predict_{k}": v for k, v in compute_metrics(predicts, labels, cfg.finetuning.eval_metrics).items()}
    metrics["predict_samples"] = len(predicts)
    write_atomic(out / "predict_results.json", json.dumps(metrics, ensure_ascii=False, indent=2))
    logger.info("Predictions in %s; metrics: %s", out / PREDICTIONS,
                {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})
    return metrics
