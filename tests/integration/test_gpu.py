"""GPU checks (opt-in with -m gpu): bf16 LoRA SFT with packing on a Qwen3-0.6B-shaped random model."""

from __future__ import annotations

import importlib.util
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


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm")
def test_vllm_engine_greedy_matches_the_hf_engine(tmp_path):
    from transformers import AutoTokenizer

    from alignlab.config import load_config
    from alignlab.infer.engine import SamplingParams, build_engine
    from tests.conftest import TINY, tiny_model

    tiny_model(seed=3, init_range=0.3).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(TINY).save_pretrained(tmp_path)
    params = SamplingParams(max_new_tokens=16, do_sample=False)
    answers = {}
    for backend in ("huggingface", "vllm"):
        cfg = load_config([f"model_name_or_path={tmp_path}", "template=qwen3_nothink", f"infer_backend={backend}",
                           "infer_dtype=float32", "vllm_maxlen=1024", "vllm_gpu_util=0.3"])
        loaded, engine = build_engine(cfg)
        prompts = [loaded.template.encode_prompt(loaded.tokenizer, [{"role": "user", "content": q}])
                   for q in ("孩子身高 95 cm，买童装选多大码？", "Which size fits a child of 104 cm?")]
        answers[backend] = [r["text"] for r in engine.generate(prompts, params)]
        engine.close()
    assert answers["vllm"] == answers["huggingface"]


def test_chat_and_api_engines_place_the_model_on_the_gpu(tmp_path):
    from transformers import AutoTokenizer

    from alignlab.config import load_config
    from alignlab.infer.engine import SamplingParams, build_engine
    from tests.conftest import TINY, tiny_model

    tiny_model(seed=3).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(TINY).save_pretrained(tmp_path)
    loaded, engine = build_engine(load_config([f"model_name_or_path={tmp_path}", "template=qwen3_nothink"]))
    try:
        assert next(loaded.model.parameters()).device.type == "cuda"
        prompt = loaded.template.encode_prompt(loaded.tokenizer, [{"role": "user", "content": "hi"}])
        (answer,) = engine.generate([prompt], SamplingParams(max_new_tokens=4, do_sample=False))
        assert answer["finish_reason"] in ("stop", "length") and not answer.get("error")
    finally:
        engine.close()


@pytest.mark.parametrize("stage", ["ppo", "grpo"])
def test_online_loop_trains_on_the_gpu_with_keyed_sampling(base_model_dir, tmp_path, stage):
    """ppo/grpo on CUDA: the policy sits on the GPU, the keyed sampling hash runs there (int64 bit operations),
    and the run logs every step; the same seed gives the same rewards twice (the draws do not depend on CUDA's
    random state)."""
    from alignlab.config import load_config
    from alignlab.train import run_train
    from tests.integration.test_online_rl import rewards_of, rl_args

    rewards = []
    for n in range(2):
        out = tmp_path / f"{stage}-{n}"
        result = run_train(load_config(rl_args(base_model_dir, out, stage, max_steps=3, reward_funcs="length_penalty",
                                               grpo_group_size=2, per_device_train_batch_size=4), with_training=True))
        assert next(result.model.parameters()).device.type == "cuda"
        rewards.append(rewards_of(out))
    assert len(rewards[0]) == 3 and rewards[0] == pytest.approx(rewards[1], abs=1e-4)
