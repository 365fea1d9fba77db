"""Runs that survive and scale: SIGKILL mid-run then resume gives the same result; 2-process DDP (gloo)
with batch b gives the same loss curve (and, for dpo, the same logged metrics) as 1 process with batch 2b."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import ROOT, read_jsonl
from tests.integration.test_train_sft import ALIGNLAB, cli, common


def losses(out):
    return [e["loss"] for e in read_jsonl(out / "trainer_log.jsonl") if e.get("loss") is not None]


def test_kill_and_resume_finishes_identically(base_model_dir, tmp_path):
    args = dict(finetuning_type="full", learning_rate=1e-3, max_steps=40, save_steps=5, max_samples=400,
                cutoff_len=256, per_device_train_batch_size=16)
    straight = tmp_path / "straight"
    cli(*common(base_model_dir, straight, **args))

    resumed = tmp_path / "resumed"
    proc = subprocess.Popen([ALIGNLAB, "train", *common(base_model_dir, resumed, **args)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (resumed / "checkpoint-10").is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (resumed / "checkpoint-10").is_dir() and not (resumed / "checkpoint-40").exists()
    run = cli(*common(base_model_dir, resumed, **args))
    assert "Resuming from" in run.stderr
    assert [e["current_steps"] for e in read_jsonl(resumed / "trainer_log.jsonl") if e.get("loss")] == list(range(1, 41))
    assert abs(losses(straight)[-1] - losses(resumed)[-1]) < 1e-6
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.slow  # the dpo test below runs the same 2-process Trainer path in the default tier (losses and metrics)
def test_two_process_ddp_matches_one_process_double_batch(base_model_dir, tmp_path):
    args = dict(finetuning_type="full", learning_rate=1e-3, max_steps=6, max_samples=96, disable_shuffling="true",
                dataloader_drop_last="true")
    single = tmp_path / "single"
    cli(*common(base_model_dir, single, per_device_train_batch_size=8, **args))
    double = tmp_path / "ddp"
    env = dict(os.environ, FORCE_TORCHRUN="1", NPROC_PER_NODE="2", OMP_NUM_THREADS="1")
    cli(*common(base_model_dir, double, per_device_train_batch_size=4, **args), env=env)
    one, two = losses(single), losses(double)
    assert len(one) == len(two) == 6
    assert max(abs(x - y) for x, y in zip(one, two)) < 1e-4


def test_two_process_dpo_logs_the_metrics_of_one_process_with_double_batch(base_model_dir, tmp_path):
    """The dpo metrics (rewards, accuracies, margins, log-probs) are summed over the processes before they
    are logged: each process's own mean would differ from the whole batch's."""
    args = dict(stage="dpo", dataset="demo_pref", finetuning_type="lora", lora_rank=8, learning_rate=5e-3,
                max_steps=4, max_samples=64, disable_shuffling="true", dataloader_drop_last="true", pref_beta=0.1)
    single, double = tmp_path / "single", tmp_path / "ddp"
    cli(*common(base_model_dir, single, per_device_train_batch_size=8, **args))
    env = dict(os.environ, FORCE_TORCHRUN="1", NPROC_PER_NODE="2", OMP_NUM_THREADS="1")
    cli(*common(base_model_dir, double, per_device_train_batch_size=4, **args), env=env)
    clocks = ("elapsed_time", "remaining_time", "grad_norm")
    one, two = ([{k: v for k, v in e.items() if k not in clocks} for e in read_jsonl(out / "trainer_log.jsonl")
                 if e.get("loss") is not None] for out in (single, double))
    assert len(one) == 4 and one[-1]["rewards/margins"] != 0
    for a, b in zip(one, two, strict=True):
        assert a.keys() == b.keys() and {"rewards/accuracies", "rewards/margins", "logps/chosen"} <= a.keys()
        assert b == pytest.approx(a, rel=1e-6, abs=1e-5)
