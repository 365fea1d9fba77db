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
from pathlib import Path

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


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def kill_after_checkpoint(args, out, checkpoint: str, env=None) -> None:
    """Start `alignlab train args` and kill -9 it and every process it started once `checkpoint` is saved."""
    proc = subprocess.Popen([ALIGNLAB, "train", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    while not (out / checkpoint).is_dir() and proc.poll() is None:  # a hang ends at the test's timeout
        time.sleep(0.05)
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    assert (out / checkpoint / "online_state.pt").is_file() and not (out / "all_results.json").exists()


def logged(out) -> list[dict]:
    """The log's metrics without the clocks."""
    return [{k: v for k, v in e.items() if not k.startswith("time/") and k not in ("elapsed_time", "remaining_time")}
            for e in read_jsonl(out / "trainer_log.jsonl")]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("stage, extra", [("ppo", {"per_device_train_batch_size": 4}),
                                          ("grpo", {"grpo_group_size": 2, "per_device_train_batch_size": 2})])
def test_killed_runs_on_one_and_two_processes_end_as_an_uninterrupted_run(base_model_dir, tmp_path, stage, extra):
    """kill -9 after a checkpoint, then the same command: the run continues there and ends with the adapter,
    value head and logged metrics of a run never killed (weights, optimizer, KL state, RNG and data position
    restored). Two processes (gloo) with batch b, killed and resumed the same way, log every metric and end
    with the weights of one process with batch 2b: prompts are split, gradients and metrics summed, and a
    completion's sampling noise does not depend on the process that drew it."""
    from safetensors.torch import load_file

    keys = {"max_steps": 6, "save_strategy": "steps", "save_steps": 3, "reward_funcs": "length_penalty",
            "learning_rate": 1e-3, "max_new_tokens": 24, "ppo_epochs": 2, "ppo_buffer_size": 2, **extra}
    double = {**keys, "per_device_train_batch_size": 2 * keys["per_device_train_batch_size"]}
    whole = tmp_path / "whole"
    run_train(load_config(rl_args(base_model_dir, whole, stage, **double), with_training=True))
    one, two = tmp_path / "one", tmp_path / "two"
    ddp = dict(os.environ, FORCE_TORCHRUN="1", NPROC_PER_NODE="2", OMP_NUM_THREADS="1")
    for out, args, env in ((one, rl_args(base_model_dir, one, stage, **double), None),
                           (two, rl_args(base_model_dir, two, stage, **keys), ddp)):
        kill_after_checkpoint(args, out, "checkpoint-3", env)
        run = cli(*args, env=env)
        assert "Resumed from" in run.stderr
        assert [e["current_steps"] for e in read_jsonl(out / "trainer_log.jsonl")] == list(range(1, 7))
    expected = logged(whole)
    assert len({e["reward"] for e in expected}) > 1 and any(e["loss"] for e in expected)
    for out in (one, two):
        for got, want in zip(logged(out), expected, strict=True):
            assert got.keys() == want.keys()
            assert got == pytest.approx(want, abs=1e-5), out.name
    assert torch.load(one / "checkpoint-6" / "online_state.pt", weights_only=False)["step"] == 6
    assert torch.load(two / "checkpoint-6" / "online_state.pt", weights_only=False)["world_size"] == 2
    # One process resumes bit for bit. Two processes sum two partial gradients where one sums the whole
    # mini-batch: ~1e-7 relative rounding, which Adam's normalisation turns into up to ~2e-5 on weights whose
    # gradients are near zero (24 updates at lr 1e-3 move weights by up to 2e-2): 1e-4 is far below a lost
    # optimiser state, a wrong sampling draw or a skipped step.
    files = ["adapter_model.safetensors"] + (["value_head.safetensors"] if stage == "ppo" else [])
    for out, atol in ((one, 1e-6), (two, 1e-4)):
        for name in files:
            resumed, uninterrupted = load_file(out / name), load_file(whole / name)
            assert resumed.keys() == uninterrupted.keys()
            for key, tensor in uninterrupted.items():
                torch.testing.assert_close(resumed[key], tensor, rtol=0, atol=atol, msg=f"{out.name} {name}: {key}")


def test_full_reward_model_source_scores_like_the_reward_model(base_model_dir, tmp_path):
    """reward_model_type full: a separately trained reward model folder (+ value head) scores rollouts."""
    from alignlab.model.value_head import ValueHeadModel
    from alignlab.train.rewards import ModelReward
    from alignlab.train.rollout import Rollout

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


def test_on_policy_grpo_without_the_old_logprob_pass_learns_the_same(base_model_dir, tmp_path, monkeypatch):
    """ppo_epochs 1 in one mini-batch skips the separate log-prob pass before learning (the update's own
    log-probs, detached, stand in): the logs and the adapter equal a run that makes the pass."""
    from safetensors.torch import load_file

    from alignlab.train import grpo

    keys = {"max_steps": 3, "reward_funcs": "tests.integration.toy_rewards:ascii_share", "learning_rate": 1e-2,
            "grpo_group_size": 2,
            "per_device_train_batch_size": 4, "ppo_epochs": 1, "ppo_buffer_size": 1, "max_new_tokens": 12}
    runs, real = {}, grpo.response_logps
    for name, skip in (("skip", True), ("pass", False)):
        calls = []
        monkeypatch.setattr(grpo, "on_policy", lambda f, estimator, skip=skip: skip)
        monkeypatch.setattr(grpo, "response_logps", lambda *a, calls=calls, **k: calls.append(1) or real(*a, **k))
        run_train(load_config(rl_args(base_model_dir, tmp_path / name, "grpo", **keys), with_training=True))
        runs[name] = (logged(tmp_path / name), load_file(tmp_path / name / "adapter_model.safetensors"), len(calls))
    assert runs["skip"][2] == 3 and runs["pass"][2] == 6  # the reference pass each step; + the old pass
    for skipped, passed in zip(runs["skip"][0], runs["pass"][0], strict=True):
        assert skipped == pytest.approx(passed, abs=1e-6)
    assert any(t.abs().max() > 1e-4 for k, t in runs["pass"][1].items() if "lora_B" in k)  # it learned
    for key, tensor in runs["pass"][1].items():
        torch.testing.assert_close(runs["skip"][1][key], tensor, rtol=0, atol=1e-6, msg=key)
