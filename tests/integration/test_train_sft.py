"""SFT/PT through the real CLI and in-process: loss falls, parameters change, the run directory is complete,
adapters reload to the same logits, LLaMA-Factory YAML runs unchanged."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from alignlab.config import ConfigError, load_config
from alignlab.train import run_train
from tests.conftest import LF_DATA, ROOT, read_jsonl

ALIGNLAB = str(Path(sys.executable).parent / "alignlab")
LOG_FIELDS = {"current_steps", "total_steps", "loss", "lr", "epoch", "percentage", "elapsed_time", "remaining_time"}


def cli(*args, env=None, check=True):
    run = subprocess.run([ALIGNLAB, "train", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    if check:
        assert run.returncode == 0, run.stderr[-3000:]
    return run


def common(base, out, **extra):
    args = {"model_name_or_path": base, "stage": "sft", "do_train": "true", "dataset": "demo_sft",
            "template": "qwen3_nothink", "cutoff_len": 128, "max_samples": 96, "output_dir": out,
            "logging_steps": 1, "per_device_train_batch_size": 8, "report_to": "none",
            "disable_gradient_checkpointing": "true", "seed": 7}
    args.update(extra)
    return [f"{k}={v}" for k, v in args.items()]


def test_full_sft_cli_lowers_loss_changes_every_parameter_and_writes_the_run(base_model_dir, tmp_path):
    out = tmp_path / "full"
    cli(*common(base_model_dir, out, finetuning_type="full", learning_rate=1e-3, max_steps=12, save_steps=6,
                plot_loss="true", val_size=16, do_eval="true", eval_strategy="steps", eval_steps=6,
                compute_accuracy="true"))
    log = read_jsonl(out / "trainer_log.jsonl")
    losses = [e["loss"] for e in log if e.get("loss") is not None]
    assert LOG_FIELDS <= set(log[0]) and log[0]["total_steps"] == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3
    assert any("eval_loss" in e for e in log)
    for name in ("run_config.yaml", "trainer_log.jsonl", "training_loss.png", "training_eval_loss.png",
                 "all_results.json", "model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
                 "checkpoint-6", "checkpoint-12"):
        assert (out / name).exists(), name
    assert "eval_accuracy" in (out / "all_results.json").read_text()
    assert "template: qwen3_nothink" in (out / "run_config.yaml").read_text()
    from transformers import AutoTokenizer

    from alignlab.data import get_template
    from tests.conftest import TINY

    saved, fresh = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(TINY)
    question = [{"role": "user", "content": "孩子 95 cm？"}]
    assert list(saved.apply_chat_template(question, tokenize=True, add_generation_prompt=True, return_dict=False)) \
        == get_template("qwen3_nothink", fresh).encode_prompt(fresh, question)  # the run serves as it trained
    before, after = load_file(base_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(before) == set(after)
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged


def test_lora_adapter_reloads_to_the_trained_logits_and_frozen_weights_stay(base_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    cfg = load_config(common(base_model_dir, out, finetuning_type="lora", lora_rank=4, lora_target="all",
                             learning_rate=5e-3, max_steps=6, save_steps=3), with_training=True)
    result = run_train(cfg)
    trained = result.model.eval()
    base = AutoModelForCausalLM.from_pretrained(base_model_dir)
    frozen = {k: v for k, v in trained.get_base_model().state_dict().items() if "lora_" not in k}
    for name, value in base.state_dict().items():
        peft_name = name.replace(".weight", ".base_layer.weight") if f"{name.replace('.weight', '.base_layer.weight')}" in frozen else name
        assert torch.equal(frozen[peft_name], value), name
    adapter = load_file(out / "adapter_model.safetensors")
    first = load_file(out / "checkpoint-3" / "adapter_model.safetensors")
    targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert {k.split(".")[-3] for k in adapter} == targets  # every linear layer but the head
    assert all(not torch.equal(adapter[k], first[k]) for k in adapter)  # every LoRA tensor kept moving
    assert all(adapter[k].abs().sum() > 0 for k in adapter if "lora_B" in k)  # B started at zero
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model_dir), out).eval()
    ids = torch.tensor([[1, 872, 198, 100, 200, 300, 2]])
    with torch.no_grad():
        assert torch.allclose(trained(input_ids=ids).logits, reloaded(input_ids=ids).logits, atol=1e-5)


def test_pretraining_stage_on_text(base_model_dir, tmp_path):
    out = tmp_path / "pt"
    cli(*common(base_model_dir, out, stage="pt", dataset="demo_pt", finetuning_type="lora", max_steps=4,
                learning_rate=1e-3, cutoff_len=64, max_samples=200))
    assert (out / "adapter_model.safetensors").exists()
    assert read_jsonl(out / "trainer_log.jsonl")[-1]["current_steps"] == 4


def test_nonfinite_loss_stops_with_step_and_keeps_last_checkpoint(base_model_dir, tmp_path):
    out = tmp_path / "nan"
    run = cli(*common(base_model_dir, out, finetuning_type="full", learning_rate=1e30, max_grad_norm=0,
                      max_steps=20, save_steps=1, lr_scheduler_type="constant"), check=False)
    assert run.returncode == 1
    (message,) = [line for line in run.stderr.splitlines() if line.startswith("alignlab train:")]
    assert ("loss is nan" in message or "gradient is not finite" in message) and "at step" in message
    assert "Last checkpoint: checkpoint-" in message
    step = int(message.split("Last checkpoint: checkpoint-")[1].split()[0])
    ckpt = load_file(out / f"checkpoint-{step}" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in ckpt.values())


def test_examples_yaml_all_validate():
    files = sorted((ROOT / "examples").rglob("*.yaml"))
    assert len(files) >= 4
    for path in files:
        if path.parent.name == "accelerate":  # accelerate's own launcher config, not an alignlab config
            assert path.read_text().startswith("# accelerate launch ") and yaml.safe_load(path.read_text())
            continue
        assert path.read_text().startswith("# alignlab "), path  # each starts with its command
        if "deepspeed:" in path.read_text() and importlib.util.find_spec("deepspeed") is None:
            with pytest.raises(ConfigError, match="DeepSpeed is not installed"):
                load_config([str(path)], with_training=True)
            load_config([str(path), "deepspeed=null"], with_training=True)
        else:
            load_config([str(path)], with_training=True)


@pytest.mark.skipif(not LF_DATA.is_dir(), reason="../shared/fixtures/llamafactory-data absent")
def test_llamafactory_lora_sft_yaml_runs_unchanged(base_model_dir, tmp_path):
    yaml_text = (ROOT / "tests" / "integration" / "llamafactory_qwen3_lora_sft.yaml").read_text()
    assert "model_name_or_path: Qwen/Qwen3-4B-Instruct-2507" in yaml_text
    out = tmp_path / "lf"
    cli(str(ROOT / "tests" / "integration" / "llamafactory_qwen3_lora_sft.yaml"),
        f"model_name_or_path={base_model_dir}", "dataset=identity,alpaca_zh_demo", f"dataset_dir={LF_DATA}",
        f"output_dir={out}", "max_steps=2")
    assert (out / "adapter_model.safetensors").exists()
    assert len(read_jsonl(out / "trainer_log.jsonl")) >= 1


def test_sft_loss_over_labelled_positions_equals_the_models_own_loss(tmp_path):
    """SFTTrainer computes the LM head only where the next token is labelled: the loss and every gradient
    equal those of the model's own loss over full logits, with and without `num_items_in_batch`."""
    import torch
    from transformers import TrainingArguments

    from alignlab.train.sft import SFTTrainer
    from tests.conftest import tiny_model

    model = tiny_model()
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = SFTTrainer(model=model, args=args)
    torch.manual_seed(0)
    ids = torch.randint(3, 1000, (3, 12))
    labels = ids.clone()
    labels[:, :5] = -100  # the prompt
    labels[1, 9:] = -100  # padding
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    for items in (None, torch.tensor(40)):
        model.zero_grad()
        ours = trainer.compute_loss(model, dict(inputs), num_items_in_batch=items)
        ours.backward()
        mine = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad()
        theirs = model(**inputs, **({} if items is None else {"num_items_in_batch": items})).loss
        theirs.backward()
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
        for name, param in model.named_parameters():
            torch.testing.assert_close(mine[name], param.grad, rtol=1e-5, atol=1e-7, msg=name)
    assert isinstance(model.lm_head, torch.nn.Linear)  # the head is put back
