"""`do_predict` + `predict_with_generate` through `alignlab train`: predictions streamed in data order
with prompt/predict/label, metrics in predict_results.json; after training and predict-only. In
process: an interrupted predict resumes to the file an uninterrupted one writes, regenerating only
what is missing or made with other settings; beam search through num_beams / eval_num_beams."""

from __future__ import annotations

import json

import pytest

from alignlab.config import load_config
from alignlab.data import get_template
from alignlab.eval import predict as predict_module
from alignlab.eval.predict import PREDICTIONS, run_predict
from alignlab.infer.engine import HFEngine
from tests.conftest import ROOT, read_jsonl, tiny_model
from tests.integration.test_train_sft import cli, common

SAMPLING = ["do_sample=true", "temperature=1.0", "top_p=0.9", "top_k=50"]


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


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3, init_range=0.3).eval()  # varied greedy text


def predict(out, model, base_model_dir, monkeypatch, *keys, stop_after=None) -> list[str]:
    """run_predict on the demo prompts (greedy, 8 tokens, 2 slots unless `keys` say otherwise); returns
    the prompts the engine was asked to answer. `stop_after`: interrupt at that many submissions."""
    from transformers import AutoTokenizer

    asked: list[list[int]] = []

    class RecordingEngine(HFEngine):
        def submit(self, prompt_ids, params, on_event):
            if stop_after is not None and len(asked) >= stop_after:
                raise KeyboardInterrupt  # the run is killed here
            asked.append(list(prompt_ids))
            return super().submit(prompt_ids, params, on_event)

    monkeypatch.setattr(predict_module, "HFEngine", RecordingEngine)
    args = {"model_name_or_path": base_model_dir, "stage": "sft", "do_predict": "true", "predict_with_generate": "true",
            "eval_dataset": "demo_prompts", "dataset_dir": ROOT / "data", "max_samples": 12, "do_sample": "false",
            "max_new_tokens": 8, "output_dir": out, "report_to": "none", "infer_max_batch": 2, "seed": 3}
    cfg = load_config([f"{k}={v}" for k, v in args.items()] + list(keys), with_training=True)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    run_predict(cfg, model, tokenizer, get_template("qwen3_nothink", tokenizer))
    return [tokenizer.decode(ids) for ids in asked]


@pytest.mark.parametrize("sampling", [[], SAMPLING], ids=["greedy", "sampled"])
def test_interrupted_predict_resumes_to_the_uninterrupted_file(model, base_model_dir, tmp_path, monkeypatch, sampling):
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert len(predict(whole, model, base_model_dir, monkeypatch, *sampling)) == 12
    with pytest.raises(KeyboardInterrupt):
        predict(part, model, base_model_dir, monkeypatch, *sampling, stop_after=10)
    done = len(read_jsonl(part / PREDICTIONS))
    assert 0 < done < 12
    with open(part / PREDICTIONS, "a", encoding="utf-8") as f:
        f.write('{"prompt": "<|im_start|>user\\n身高')  # a line torn by the kill
    asked = predict(part, model, base_model_dir, monkeypatch, *sampling)
    expected = read_jsonl(whole / PREDICTIONS)
    assert asked == [row["prompt"] for row in expected[done:]]  # only the missing rows are generated
    assert (part / PREDICTIONS).read_bytes() == (whole / PREDICTIONS).read_bytes()
    assert json.loads((part / "predict_results.json").read_text()) == \
        json.loads((whole / "predict_results.json").read_text())


def test_predict_regenerates_only_what_is_missing_or_made_otherwise(model, base_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "predict"

    def run(*keys, with_model=model):
        return len(predict(out, with_model, base_model_dir, monkeypatch, *keys))

    assert run("max_samples=4") == 4
    assert run("max_samples=4") == 0  # finished: nothing to do
    assert run("max_samples=6") == 2  # more data: only the new rows
    assert run("max_samples=6", "max_new_tokens=5") == 6  # other generating settings: every row again
    other = tiny_model(seed=4, init_range=0.3).eval()
    assert run("max_samples=6", "max_new_tokens=5", with_model=other) == 6  # other weights
    assert run("max_samples=6", "max_new_tokens=5", "cutoff_len=12", with_model=other) == 6  # other prompts (cut)
    assert len(read_jsonl(out / PREDICTIONS)) == 6


def test_predict_beam_search_follows_num_beams_and_eval_num_beams(model, base_model_dir, tmp_path, monkeypatch):
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    template = get_template("qwen3_nothink", tokenizer)
    source = json.loads((ROOT / "data" / "demo_prompts.json").read_text(encoding="utf-8"))[:6]
    prompts = [template.encode_prompt(tokenizer, [{"role": "user", "content": s["instruction"]}]) for s in source]

    def reference(beams):  # HF beam search, one prompt at a time
        with torch.no_grad():
            return [tokenizer.decode(model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                                    num_beams=beams, do_sample=False, max_new_tokens=8,
                                                    eos_token_id=template.stop_token_ids(tokenizer),
                                                    pad_token_id=tokenizer.pad_token_id)[0, len(p):],
                                     skip_special_tokens=True) for p in prompts]

    three = reference(3)
    assert three != reference(1)  # beams change the answers of this model
    for keys in (["num_beams=3"], ["num_beams=2", "eval_num_beams=3"]):  # eval_num_beams wins for predict
        out = tmp_path / "-".join(keys)
        assert predict(out, model, base_model_dir, monkeypatch, "max_samples=6", *keys) == []  # not the engine
        assert [row["predict"] for row in read_jsonl(out / PREDICTIONS)] == three
