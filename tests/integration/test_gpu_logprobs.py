"""GPU check (opt-in with -m gpu, needs vllm): the vLLM engine reports the same token logprobs as the HF engine."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm")]


def test_vllm_logprobs_match_the_hf_engine(tmp_path):
    from transformers import AutoTokenizer

    from alignlab.config import load_config
    from alignlab.infer.engine import SamplingParams, build_engine
    from tests.conftest import TINY, tiny_model

    tiny_model(seed=3, init_range=0.3).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(TINY).save_pretrained(tmp_path)
    params = SamplingParams(max_new_tokens=8, do_sample=False, logprobs=2)
    entries = {}
    for backend in ("huggingface", "vllm"):
        cfg = load_config([f"model_name_or_path={tmp_path}", "template=qwen3_nothink", f"infer_backend={backend}",
                           "infer_dtype=float32", "vllm_maxlen=1024", "vllm_gpu_util=0.3"])
        loaded, engine = build_engine(cfg)
        prompt = loaded.template.encode_prompt(loaded.tokenizer, [{"role": "user", "content": "Which size for 104 cm?"}])
        entries[backend] = [e for event in engine.stream(prompt, params) for e in event.logprobs or []]
        engine.close()
    hf, vllm = entries["huggingface"], entries["vllm"]
    assert [e.token_id for e in vllm] == [e.token_id for e in hf] and len(hf) == 8
    assert [e.logprob for e in vllm] == pytest.approx([e.logprob for e in hf], abs=1e-3)
    assert [[t for t, _ in e.top] for e in vllm] == [[t for t, _ in e.top] for e in hf]
