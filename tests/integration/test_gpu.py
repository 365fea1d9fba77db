"""GPU checks (opt-in with -m gpu): bf16 LoRA SFT with packing on a Qwen3-0.6B-shaped random model."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_bf16_lora_sft_qwen3_0_6b_shape_with_packing():
    run = subprocess.run([sys.executable, "bench/train.py", "--model", "0.6b", "--methods", "lora", "--packing", "on",
                          "--steps", "20", "--batch", "4", "--cutoff", "2048"], cwd=ROOT, capture_output=True,
                         text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    row = [line for line in run.stdout.splitlines() if line.startswith("| 0.6b")][-1]
    tokens_per_s = float(row.split("|")[6])
    assert tokens_per_s > 1000
