"""Gradient accumulation is invisible: batch b with `gradient_accumulation_steps` k logs the same
loss and makes the same update as batch b*k with k = 1, for every offline stage and every pref_loss."""

from __future__ import annotations

import pytest
import torch

from alignlab.config import load_config
from alignlab.train import run_train
from tests.conftest import read_jsonl

CASES = [("sft", "demo_sft", None), ("pt", "demo_pt", None), ("rm", "demo_pref", None), ("kto", "demo_kto", None)]
CASES += [("dpo", "demo_pref", loss) for loss in ("sigmoid", "hinge", "ipo", "kto_pair", "orpo", "simpo")]


def one_step(base, out, stage, dataset, pref_loss, batch, accumulation):
    args = {"model_name_or_path": base, "stage": stage, "do_train": True, "dataset": dataset,
            "template": "qwen3_nothink", "cutoff_len": 64, "max_samples": 8, "output_dir": out,
            "finetuning_type": "full", "per_device_train_batch_size": batch,
            "gradient_accumulation_steps": accumulation, "max_steps": 1, "optim": "sgd", "learning_rate": 0.5,
            "lr_scheduler_type": "constant", "max_grad_norm": 0, "disable_shuffling": True,
            "logging_steps": 1, "report_to": "none", "disable_gradient_checkpointing": True, "seed": 3,
            "save_strategy": "no", "packing": stage == "pt"}
    if pref_loss:
        args["pref_loss"] = pref_loss
    result = run_train(load_config([f"{k}={v}" for k, v in args.items()], with_training=True))
    loss = next(e["loss"] for e in read_jsonl(out / "trainer_log.jsonl") if "loss" in e)
    return loss, {n: p.detach().clone() for n, p in result.model.named_parameters()}


@pytest.mark.parametrize(("stage", "dataset", "pref_loss"), CASES, ids=[c[2] or c[0] for c in CASES])
def test_accumulated_batches_log_and_update_like_one_batch(base_model_dir, tmp_path, stage, dataset, pref_loss):
    from safetensors.torch import load_file

    base = load_file(str(base_model_dir / "model.safetensors"))
    loss_whole, whole = one_step(base_model_dir, tmp_path / "whole", stage, dataset, pref_loss, 4, 1)
    loss_accum, accum = one_step(base_model_dir, tmp_path / "accum", stage, dataset, pref_loss, 2, 2)
    assert loss_accum == pytest.approx(loss_whole, abs=1e-6, rel=1e-6)
    moved = 0.0
    for name, param in whole.items():
        assert torch.allclose(accum[name], param, atol=1e-6, rtol=0), name
        key = name.removeprefix("backbone.")
        if key in base:
            moved = max(moved, (param - base[key]).abs().max().item())
    assert moved > 1e-3  # the step changed the weights, so equal updates are not equal no-ops
