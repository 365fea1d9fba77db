"""rm, dpo (every pref_loss) and kto on the tiny model: accuracy on separable pairs, value head reload,
rising DPO margins, precomputed == per-step reference, LLaMA-Factory-style YAMLs on its demo data."""

from __future__ import annotations

import json

import pytest
import torch

from alignlab.config import load_config
from alignlab.train import run_train
from tests.conftest import LF_DATA, ROOT, read_jsonl, tiny_model
from tests.integration.test_train_sft import cli, common


def separable_pairs(tmp_path, n=200):
    tmp_path.mkdir(parents=True, exist_ok=True)
    rows = [{"instruction": f"问题 {i}：宝宝身高 {80 + i % 40} 厘米", "input": "",
             "chosen": "建议选 110 码。", "rejected": "买大一码总是对的。"} for i in range(n)]
    (tmp_path / "pairs.json").write_text(json.dumps(rows, ensure_ascii=False))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"pairs": {
        "file_name": "pairs.json", "ranking": True, "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}}}))
    return tmp_path


def test_reward_model_separates_pairs_and_reloads_with_its_value_head(base_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from alignlab.model.value_head import ValueHeadModel

    data = separable_pairs(tmp_path / "data")
    out = tmp_path / "rm"
    cfg = load_config(common(base_model_dir, out, stage="rm", dataset="pairs", dataset_dir=data,
                             finetuning_type="lora", lora_rank=4, learning_rate=2e-3, max_steps=30, val_size=40,
                             do_eval="true", do_predict="true", logging_steps=5), with_training=True)
    result = run_train(cfg)
    assert result.metrics["eval_accuracy"] >= 0.95 and result.metrics["rm_ready"] is True
    saved = json.loads((out / "all_results.json").read_text())
    assert saved["eval_accuracy"] == result.metrics["eval_accuracy"] and saved["rm_ready"] is True
    predictions = read_jsonl(out / "generated_predictions.jsonl")
    assert len(predictions) == 40 and sum(p["chosen"] > p["rejected"] for p in predictions) >= 38
    assert (out / "value_head.safetensors").is_file() and (out / "adapter_model.safetensors").is_file()
    # reload: base + adapter + value head gives the trained scores
    reloaded = ValueHeadModel(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model_dir), out))
    reloaded.load_head(str(out))
    ids = torch.tensor([[1, 872, 198, 100, 200, 300, 2, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0]])
    trained = result.model.eval()
    with torch.no_grad():
        assert torch.allclose(trained.scores(ids, mask), reloaded.eval().scores(ids, mask), atol=1e-5)
    log = read_jsonl(out / "trainer_log.jsonl")
    train_rows = [e for e in log if "loss" in e]
    assert {"accuracy", "rewards/chosen", "rewards/rejected", "rewards/margins"} <= set(train_rows[0])
    evaluations = [e for e in log if "eval_accuracy" in e]  # evaluated during training by default
    assert len(evaluations) >= 5 and evaluations[-1]["current_steps"] == 30
    assert all(v is not None for e in log for v in e.values())


def test_reward_model_below_the_gate_is_reported_not_ready(base_model_dir, tmp_path):
    data = separable_pairs(tmp_path / "data", n=60)
    out = tmp_path / "rm"
    run = cli(*common(base_model_dir, out, stage="rm", dataset="pairs", dataset_dir=data, finetuning_type="lora",
                      learning_rate=1e-9, max_steps=1, val_size=20, do_eval="true", rm_min_accuracy=1.0))
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_accuracy"] < 1.0  # an untrained value head: not every held-out pair right
    assert "NOT ready" in run.stderr and results["rm_ready"] is False


def test_dpo_raises_accuracies_and_margins(base_model_dir, tmp_path):
    out = tmp_path / "dpo"
    cli(*common(base_model_dir, out, stage="dpo", dataset="demo_pref", finetuning_type="lora", lora_rank=8,
                learning_rate=2e-3, max_steps=16, max_samples=256, plot_loss="true"))
    log = [e for e in read_jsonl(out / "trainer_log.jsonl") if "rewards/margins" in e]
    names = {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
             "logps/rejected", "logits/chosen", "logits/rejected"}
    assert names <= set(log[0])
    first = sum(e["rewards/margins"] for e in log[:3]) / 3
    last = sum(e["rewards/margins"] for e in log[-3:]) / 3
    assert last > first + 0.05
    assert sum(e["rewards/accuracies"] for e in log[-3:]) > sum(e["rewards/accuracies"] for e in log[:3])
    assert (out / "training_loss.png").is_file() and (out / "training_rewards_accuracies.png").is_file()


def test_precomputed_and_per_step_reference_give_the_same_first_loss(base_model_dir, tmp_path):
    policy = tmp_path / "policy"
    tiny_model(seed=1).save_pretrained(policy)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(base_model_dir).save_pretrained(policy)
    first = {}
    for precompute in ("true", "false"):
        out = tmp_path / f"dpo-{precompute}"
        cli(*common(policy, out, stage="dpo", dataset="demo_pref", finetuning_type="full", ref_model=base_model_dir,
                    learning_rate=1e-4, max_steps=2, max_samples=32, precompute_ref_logps=precompute,
                    disable_shuffling="true"))
        first[precompute] = read_jsonl(out / "trainer_log.jsonl")[0]
    assert abs(first["true"]["loss"] - 0.6931) > 0.01  # a real reference, not the policy itself
    assert abs(first["true"]["loss"] - first["false"]["loss"]) < 1e-5
    assert abs(first["true"]["rewards/margins"] - first["false"]["rewards/margins"]) < 1e-5


@pytest.mark.parametrize("loss", ["hinge", "ipo", "orpo", "simpo", "bco_pair"])
def test_other_preference_losses_train(base_model_dir, tmp_path, loss):
    out = tmp_path / loss
    cfg = load_config(common(base_model_dir, out, stage="dpo", dataset="demo_pref", finetuning_type="lora",
                             pref_loss=loss, learning_rate=1e-3, max_steps=3, max_samples=24, pref_ftx=0.1),
                      with_training=True)
    run_train(cfg)
    log = read_jsonl(out / "trainer_log.jsonl")
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in log if e.get("loss") is not None)
    if loss == "orpo":
        assert {"sft_loss", "odds_ratio_loss"} <= set(log[0])
    if loss == "bco_pair":  # the running reward mean is logged, and moves as batches come
        deltas = [e["bco/delta"] for e in log if "bco/delta" in e]
        assert len(deltas) >= 2 and len(set(deltas)) > 1


def test_kto_trains_with_kl_baseline(base_model_dir, tmp_path):
    out = tmp_path / "kto"
    cli(*common(base_model_dir, out, stage="kto", dataset="demo_kto", finetuning_type="lora", learning_rate=2e-3,
                max_steps=8, max_samples=128))
    log = [e for e in read_jsonl(out / "trainer_log.jsonl") if "kl" in e]
    assert {"kl", "rewards/chosen", "rewards/rejected", "rewards/margins"} <= set(log[-1])
    assert sum(e["rewards/margins"] for e in log[-3:]) > sum(e["rewards/margins"] for e in log[:3])


@pytest.mark.skipif(not LF_DATA.is_dir(), reason="../shared/fixtures/llamafactory-data absent")
@pytest.mark.parametrize("example, dataset", [  # dpo in the default tier; rm and kto have their own tests there
    pytest.param("qwen3_lora_reward", "dpo_zh_demo", marks=pytest.mark.slow), ("qwen3_lora_dpo", "dpo_zh_demo"),
    pytest.param("qwen3_lora_kto", "kto_en_demo", marks=pytest.mark.slow)])
def test_llamafactory_style_preference_yamls_run_unchanged(base_model_dir, tmp_path, example, dataset):
    out = tmp_path / example
    cli(str(ROOT / "examples" / "train_lora" / f"{example}.yaml"), f"model_name_or_path={base_model_dir}",
        f"dataset={dataset}", f"dataset_dir={LF_DATA}", f"output_dir={out}", "max_steps=2", "max_samples=40",
        "cutoff_len=512")
    assert (out / "adapter_model.safetensors").is_file()
    assert read_jsonl(out / "trainer_log.jsonl")
