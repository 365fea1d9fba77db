"""Stage grpo: group-relative policy optimisation (our addition; no value model).

Each prompt is sampled `grpo_group_size` times; a completion's advantage is its reward minus the
group mean, over the group std. The loss is the clipped surrogate plus `grpo_beta` x the k3 KL
estimate against the reference policy (the base with the adapter disabled, or a frozen copy).
"""

from __future__ import annotations

import time

import torch

from .losses import group_advantages, grpo_loss
from .online import (
    OnlineRun,
    check_finite,
    generate_rollout,
    generation_kwargs,
    minibatches,
    response_logps,
)
from .reference import load_reference, reference_of
from .rewards import build_reward
from .sft import build_model


def run(cfg, tokenizer, template, data, resume: str | None) -> tuple[dict, object]:
    training, f = cfg.training, cfg.finetuning
    device = training.device
    model = build_model(cfg, tokenizer).to(device)
    reference = load_reference(cfg, tokenizer)
    if reference is not None:
        reference.to(device)
    reward = build_reward(cfg, tokenizer, template, device)
    params = [p for p in model.parameters() if p.requires_grad]
    online = OnlineRun(cfg, model, params, data.train)
    gen_kwargs, group = generation_kwargs(cfg.generating), f.grpo_group_size

    def rollout_and_learn(batch):
        clock = [time.perf_counter()]
        rollout = generate_rollout(model, tokenizer, template, batch, gen_kwargs, group, device)
        clock.append(time.perf_counter())
        scores = reward(rollout)
        check_finite("The reward", scores, online.step + 1)
        advantages = group_advantages(scores, group).to(device)
        mask = rollout.response_mask
        clock.append(time.perf_counter())
        with torch.no_grad():
            old_logps = response_logps(model, rollout)
            with reference_of(model, reference) as ref:
                ref_logps = response_logps(ref, rollout)
        totals = {"loss": 0.0, "kl": 0.0, "clipfrac": 0.0}
        updates = 0
        clock.append(time.perf_counter())
        for _ in range(f.ppo_epochs):
            for idx in minibatches(len(scores), f.ppo_buffer_size, device):
                sub = rollout.select(idx)
                logps = response_logps(model, sub)
                loss, metrics = grpo_loss(logps, old_logps[idx], ref_logps[idx], advantages[idx], mask[idx],
                                          f.ppo_cliprange, f.grpo_beta)
                online.optimizer_step(loss, params)
                totals["loss"] += loss.item()
                totals["kl"] += metrics["kl"].item()
                totals["clipfrac"] += metrics["clipfrac"].item()
                updates += 1
        clock.append(time.perf_counter())
        result = {k: v / updates for k, v in totals.items()}
        result.update({f"time/{name}": clock[i + 1] - clock[i]
                       for i, name in enumerate(("generate", "score", "logps", "learn"))})
        result.update({"reward": scores.mean().item(), "reward_std": scores.std().item(),
                       "response_length": mask.sum(-1).float().mean().item()})
        return result

    return online.train(rollout_and_learn, tokenizer), model
