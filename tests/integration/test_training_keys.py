"""LLaMA-Factory keys that change training: early_stopping_steps, include_effective_tokens_per_second,
and the keys accepted only for compatibility warn once that they have no effect."""

from __future__ import annotations

import json
import logging

import pytest

from alignlab.config import load_config
from alignlab.train import run_train
from tests.conftest import read_jsonl
from tests.integration.test_train_sft import common


def test_early_stopping_and_effective_tokens_per_second(base_model_dir, tmp_path):
    from alignlab.data import get_dataset, get_template
    from alignlab.model import load_tokenizer

    out = tmp_path / "run"
    cfg = load_config(common(base_model_dir, out, finetuning_type="lora", max_steps=10, learning_rate=0.0,
                             val_size=8, eval_strategy="steps", eval_steps=1, save_steps=1,
                             metric_for_best_model="eval_loss", load_best_model_at_end="true",
                             early_stopping_steps=1, include_effective_tokens_per_second="true"), with_training=True)
    run_train(cfg)
    # lr 0: the second evaluation does not improve on the first, so patience 1 stops at step 2 of 10
    assert max(e["current_steps"] for e in read_jsonl(out / "trainer_log.jsonl")) == 2
    results = json.loads((out / "all_results.json").read_text())
    tokenizer = load_tokenizer(cfg.model)
    template = get_template(cfg.data.template, tokenizer)
    train = get_dataset(cfg.data, "sft", tokenizer, template, seed=cfg.training.seed).train
    tokens = sum(len(ids) for ids in train["input_ids"])
    expected = tokens * results["epoch"] / results["train_runtime"]
    assert results["effective_tokens_per_sec"] == pytest.approx(expected, rel=1e-3)


def test_compatibility_keys_warn_once_that_they_do_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="alignlab"):
        load_config(["model_name_or_path=m", "streaming=true", "eval_on_each_dataset=true", "pissa_convert=true",
                     "ignore_pad_token_for_loss=false", "buffer_size=16384"])
    warned = [r.getMessage() for r in caplog.records if "has no effect" in r.getMessage()]
    assert sorted(m.split("`")[1] for m in warned) == ["eval_on_each_dataset", "ignore_pad_token_for_loss",
                                                       "pissa_convert", "streaming"]  # buffer_size is its default
