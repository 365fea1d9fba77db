"""PPO and GRPO on the tiny model: mean reward rises on a toy task, rewards from functions and a real
HTTP reward server, and a killed PPO or GRPO run resumes to the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from alignlab.config import load_config
from alignlab.train import run_train
from alignlab.train.rewards import exact_label, extract_answer, length_penalty, regex_format
from tests.conftest import ROOT, read_jsonl
from tests.integration.test_train_sft import ALIGNLAB, cli


def rl_args(base, out, stage, **extra):
    args = {"model_name_or_path": base, "stage": stage, "do_train": "true", "dataset": "demo_prompts",
            "template": "qwen3_nothink", "cutoff_len": 128, "output_dir": out, "logging_steps": 1,
            "per_device_train_batch_size": 8, "report_to": "none", "finetuning_type": "lora", "lora_rank": 8,
            "max_new_tokens": 12, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "seed": 3,
            "disable_gradient_checkpointing": "true", "save_strategy": "no"}
    args.update(extra)
    return [f"{k}={v}" for k, v in args.items()]


def rewards_of(out):
    return [e["reward"] for e in read_jsonl(out / "trainer_log.jsonl")]


@pytest.mark.parametrize("stage, extra", [
    ("grpo", {"grpo_group_size": 4, "learning_rate": 2e-3, "ppo_epochs": 2, "ppo_buffer_size": 2,
              "finetuning_type": "full"}),
    pytest.param("grpo", {"grpo_group_size": 4, "learning_rate": 2e-3, "ppo_epochs": 2, "ppo_buffer_size": 2,
                          "finetuning_type": "full", "advantage_estimator": "rloo"}, marks=pytest.mark.slow, id="rloo"),
    pytest.param("grpo", {"grpo_group_size": 4, "learning_rate": 2e-3, "ppo_epochs": 2, "ppo_buffer_size": 2,
                          "finetuning_type": "full", "advantage_estimator": "reinforce_pp"}, marks=pytest.mark.slow,
                 id="reinforce_pp"),
    ("ppo", {"learning_rate": 2e-3, "ppo_epochs": 4, "ppo_buffer_size": 2, "per_device_train_batch_size": 16,
             "finetuning_type": "full",
             "ppo_kl_coef": 0.01}),
])
def test_mean_reward_rises_on_a_toy_task(base_model_dir, tmp_path, stage, extra):
    out = tmp_path / extra.get("advantage_estimator", stage)
    cfg = load_config(rl_args(base_model_dir, out, stage, max_steps=24,
                              reward_funcs="tests.integration.toy_rewards:ascii_share", **extra), with_training=True)
    run_train(cfg)
    rewards = rewards_of(out)
    assert len(rewards) == 24
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.15, rewards
    log = read_jsonl(out / "trainer_log.jsonl")
    keys = {"reward", "kl", "loss", "lr", "response_length"}
    if stage == "ppo":
        keys |= {"entropy", "loss/policy", "loss/value", "clipfrac", "approx_kl", "kl_coef"}
    assert keys <= set(log[-1])
    assert (out / "model.safetensors").is_file()


def test_builtin_reward_functions():
    rows = [{"label": "110"}, {"label": "90"}, {"label": "90"}]
    completions = ["建议选 110 码。", "I recommend size 100.", "买大一码总是对的"]
    size = r"(\d{2,3})\s*码|\b(?i:size)\s*(\d{2,3})\b"  # the demo's answer_regex
    assert exact_label([], completions, rows, answer_pattern=size) == [1.0, 0.0, 0.0]
    assert exact_label([], ["The answer: 110", "答案：90。", "\\boxed{80}"], rows) == [1.0, 1.0, 0.0]
    assert extract_answer("建议 90 码或 100 码", size) is None  # two different answers: none
    assert extract_answer("The answer: 42.") == "42" and extract_answer("\\boxed{7}") == "7"
    assert regex_format([], completions, rows, pattern=r"^建议选 \d+ 码") == [1.0, 0.0, 0.0]
    assert length_penalty([], completions, rows, lengths=[4, 8, 2], max_new_tokens=8) == [-0.5, -1.0, -0.25]


class ScoreHandler(BaseHTTPRequestHandler):
    """LLaMA-Factory's reward API shape: {"model", "messages": [texts]} -> {"scores": [...]}."""

    seen: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ScoreHandler.seen.append(body)
        scores = [float("110" in text) for text in body["messages"]]
        data = json.dumps({"scores": scores}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_reward_api_source_against_a_real_http_server(base_model_dir, tmp_path):
    server = HTTPServer(("127.0.0.1", 0), ScoreHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1/score/evaluation"
        out = tmp_path / "api"
        cfg = load_config(rl_args(base_model_dir, out, "grpo", max_steps=2, reward_model=url, reward_model_type="api",
                                  grpo_group_size=2, per_device_train_batch_size=4), with_training=True)
        run_train(cfg)
    finally:
        server.shutdown()
    assert len(ScoreHandler.seen) == 2
    body = ScoreHandler.seen[0]
    assert set(body) == {"model", "messages"} and len(body["messages"]) == 8
    assert body["messages"][0].startswith("<|im_start|>user\n")
    assert len(rewards_of(out)) == 2


@pytest.mark.parametrize("stage, extra", [("ppo", {}), ("grpo", {"grpo_group_size": 2, "per_device_train_batch_size": 4})])
def test_killed_run_resumes_to_what_an_uninterrupted_run_ends_with(base_model_dir, tmp_path, stage, extra):
    """kill -9 after a checkpoint, then the same command: the run continues there and ends with the adapter,
    value head and logged rewards of a run never killed (weights, optimizer, KL state, sampling RNG and
    data position all restored)."""
    from safetensors.torch import load_file

    keys = {"max_steps": 8, "save_strategy": "steps", "save_steps": 3, "reward_funcs": "length_penalty",
            "learning_rate": 1e-3, "max_new_tokens": 24, **extra}
    whole = tmp_path / "whole"
    run_train(load_config(rl_args(base_model_dir, whole, stage, **keys), with_training=True))
    out = tmp_path / "killed"
    args = rl_args(base_model_dir, out, stage, **keys)
    proc = subprocess.Popen([ALIGNLAB, "train", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while not (out / "checkpoint-3").is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoint-3" / "online_state.pt").is_file() and not (out / "all_results.json").exists()
    run = cli(*args)
    assert "Resumed from" in run.stderr
    log = read_jsonl(out / "trainer_log.jsonl")
    assert [e["current_steps"] for e in log] == list(range(1, 9))
    assert rewards_of(out) == pytest.approx(rewards_of(whole), abs=1e-6)
    saved = torch.load(out / "checkpoint-6" / "online_state.pt", weights_only=False)
    assert saved["step"] == 6
    files = ["adapter_model.safetensors"] + (["value_head.safetensors"] if stage == "ppo" else [])
    for name in files:
        resumed, uninterrupted = load_file(out / name), load_file(whole / name)
        assert resumed.keys() == uninterrupted.keys()
        for key, tensor in uninterrupted.items():
            torch.testing.assert_close(resumed[key], tensor, rtol=0, atol=1e-6, msg=f"{name}: {key}")


def test_full_reward_model_source_scores_like_the_reward_model(base_model_dir, tmp_path):
    """reward_model_type full: a separately trained reward model folder (+ value head) scores rollouts."""
    from alignlab.model.value_head import ValueHeadModel
    from alignlab.train.online import Rollout
    from alignlab.train.rewards import ModelReward

    rm_out = tmp_path / "rm"
    run_train(load_config(rl_args(base_model_dir, rm_out, "rm", dataset="demo_pref", finetuning_type="full",
                                  max_steps=2, learning_rate=1e-4, max_samples=32), with_training=True))
    cfg = load_config(rl_args(base_model_dir, tmp_path / "grpo", "grpo", reward_model=rm_out,
                              reward_model_type="full", max_steps=2, grpo_group_size=2,
                              per_device_train_batch_size=4), with_training=True)
    from alignlab.data import get_template
    from alignlab.model import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    template = get_template("qwen3_nothink", tokenizer)
    scorer = ModelReward(cfg, tokenizer, template, "cpu")
    messages = [[{"role": "user", "content": "身高 105 cm 买多大？"}]]
    rollout = Rollout(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), 0, ["p"], ["建议选 110 码。"],
                      messages, [""], [{}], [5])
    score = scorer(rollout)
    # the same conversation scored by the reward model loaded by hand
    from transformers import AutoModelForCausalLM

    reference = ValueHeadModel(AutoModelForCausalLM.from_pretrained(rm_out)).eval()
    reference.load_head(str(rm_out))
    pairs = template.encode_multiturn(tokenizer, messages[0] + [{"role": "assistant", "content": "建议选 110 码。"}])
    ids = torch.tensor([[t for p, r in pairs for t in p + r]])
    with torch.no_grad():
        expected = reference.scores(ids, torch.ones_like(ids))
    assert torch.allclose(score, expected, atol=1e-5)
    run_train(cfg)  # and it drives a GRPO step end to end
    assert len(rewards_of(tmp_path / "grpo")) == 2
