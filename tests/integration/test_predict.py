"""`do_predict` + `predict_with_generate` through `alignlab train`: predictions streamed in data order
with prompt/predict/label, metrics in predict_results.json; after training and predict-only."""

from __future__ import annotations

import json

from tests.conftest import ROOT, read_jsonl
from tests.integration.test_train_sft import cli, common


def test_predict_only_writes_predictions_and_metrics(base_model_dir, tmp_path):
    out = tmp_path / "predict"
    (base_model_dir / "run_config.yaml").write_text("template: qwen3_nothink\n")
    try:
        cli(f"model_name_or_path={base_model_dir}", "stage=sft", "do_predict=true", "predict_with_generate=true",
            "eval_dataset=demo_prompts", "max_samples=12", "do_sample=false", "max_new_tokens=6",
            "eval_metrics=classification", f"output_dir={out}", "report_to=none", "infer_max_batch=4")
    finally:
        (base_model_dir / "run_config.yaml").unlink()
    rows = read_jsonl(out / "generated_predictions.jsonl")
    assert len(rows) == 12 and set(rows[0]) == {"prompt", "predict", "label"}
    source = json.loads((ROOT / "data" / "demo_prompts.json").read_text(encoding="utf-8"))[:12]
    assert [r["label"] for r in rows] == [s["output"] for s in source]  # in data order
    assert rows[0]["prompt"] == f"<|im_start|>user\n{source[0]['instruction']}<|im_end|>\n<|im_start|>assistant\n"
    metrics = json.loads((out / "predict_results.json").read_text())
    assert metrics["predict_samples"] == 12
    assert {"predict_bleu-4", "predict_rouge-1", "predict_rouge-2", "predict_rouge-l", "predict_exact_match",
            "predict_accuracy", "predict_f1_macro", "predict_confusion_matrix"} <= set(metrics)


def test_train_then_predict(base_model_dir, tmp_path):
    out = tmp_path / "sft"
    cli(*common(base_model_dir, out, finetuning_type="lora", max_steps=3, learning_rate=1e-3),
        "do_predict=true", "predict_with_generate=true", "eval_dataset=demo_prompts", "max_new_tokens=4",
        "do_sample=false")
    rows = read_jsonl(out / "generated_predictions.jsonl")
    assert len(rows) == 96 and all(r["label"] for r in rows)  # max_samples 96 applies to the eval data too
    assert json.loads((out / "predict_results.json").read_text())["predict_samples"] == 96
