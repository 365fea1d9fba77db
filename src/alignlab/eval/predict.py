"""`do_predict` + `predict_with_generate` (stage sft): answers for `eval_dataset` (or `dataset`),
streamed to generated_predictions.jsonl in order as they are produced, and metrics to
predict_results.json."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

from ..infer.engine import HFEngine, SamplingParams
from .metrics import compute_metrics

logger = logging.getLogger(__name__)


def run_predict(cfg, model, tokenizer, template) -> dict:
    """Generate for every prompt of the evaluation data; return the `predict_*` metrics."""
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
    params = SamplingParams.from_generating_args(cfg.generating)
    engine = HFEngine(model.eval(), tokenizer, template, max_batch=cfg.model.infer_max_batch)
    predicts, labels = [], []
    chunk = 4 * cfg.model.infer_max_batch
    start = time.time()
    try:
        with open(out / "generated_predictions.jsonl", "w", encoding="utf-8") as f:
            for first in range(0, len(rows), chunk):
                batch = rows.select(range(first, min(first + chunk, len(rows))))
                results = engine.generate(list(batch["input_ids"]), params)
                for row, result in zip(batch, results):
                    label = tokenizer.decode(row["labels"], skip_special_tokens=True)
                    prompt = tokenizer.decode(row["input_ids"], skip_special_tokens=False)
                    f.write(json.dumps({"prompt": prompt, "predict": result["text"], "label": label},
                                       ensure_ascii=False) + "\n")
                    predicts.append(result["text"])
                    labels.append(label)
                f.flush()
                done, elapsed = len(predicts), time.time() - start
                print(f"\rpredicting: {done}/{len(rows)}, {elapsed:.0f}s elapsed, "
                      f"ETA {elapsed / done * (len(rows) - done):.0f}s", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    finally:
        engine.close()
    metrics = {f"predict_{k}": v for k, v in compute_metrics(predicts, labels, cfg.finetuning.eval_metrics).items()}
    metrics["predict_samples"] = len(predicts)
    tmp = out / "predict_results.json.tmp"
    tmp.write_text(json.dumps(metrics, ensure_ascii=False, indent=2))
    tmp.replace(out / "predict_results.json")
    logger.info("Predictions in %s; metrics: %s", out / "generated_predictions.jsonl",
                {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})
    return metrics
