"""Stage grpo: critic-free policy optimisation over groups of rollouts (our addition; no value model).

Each prompt is sampled `grpo_group_size` times and scored; `advantage_estimator` turns the scores
into advantages: `grpo` (reward minus the group mean, over the group std), `rloo` (reward minus the
mean of the other samples of its prompt) or `reinforce_pp` (REINFORCE++: the per-token KL penalty
`grpo_beta` x (log pi - log ref) in the reward, returns-to-go whitened over the batch). The loss is the
clipped surrogate plus, for grpo and rloo, `grpo_beta` x the k3 KL estimate against the reference
policy (the base with the adapter disabled, or a frozen copy).
"""

from __future__ import annotations

import time

import torch

from ..config.stages import advantage_estimator_of
from .losses import (
    group_advantages,
    grpo_loss,
    kl_penalized_rewards,
    reinforce_pp_advantages,
    rloo_advantages,
)
from .online import (
    OnlineParts,
    minibatches,
    phase_times,
    prepare_online,
    response_logps,
    sample_and_score,
)
from .reference import reference_of
from .rewards import check_reward_source

# advantage_estimator -> (scores, old_logps, ref_logps, mask, finetuning args) -> (advantages, weight
# of the k3 KL term in the loss). config/stages.py's ADVANTAGE_ESTIMATORS names those of stage grpo.
ADVANTAGES = {
    "grpo": lambda scores, logps, ref, mask, f: (group_advantages(scores, f.grpo_group_size), f.grpo_beta),
    "rloo": lambda scores, logps, ref, mask, f: (rloo_advantages(scores, f.grpo_group_size), f.grpo_beta),
    "reinforce_pp": lambda scores, logps, ref, mask, f: (
        reinforce_pp_advantages(kl_penalized_rewards(scores, logps, ref, mask, f.grpo_beta)[0], mask, f.ppo_gamma),
        0.0),
}


def grpo_step(parts: OnlineParts, estimator: str, batch: list[dict]) -> dict:
    """Rollout groups, score, advantages by the estimator, then `ppo_epochs` passes of clipped updates."""
    f, online, device = parts.finetuning, parts.online, parts.device
    rollout, scores, clock = sample_and_score(parts, batch, f.grpo_group_size)
    mask = rollout.response_mask
    with torch.no_grad():
        old_logps = response_logps(parts.model, rollout)
        with reference_of(parts.model, parts.reference) as ref:
            ref_logps = response_logps(ref, rollout)
    advantages, kl_weight = ADVANTAGES[estimator](scores, old_logps, ref_logps, mask, f)
    totals = {"loss": 0.0, "kl": 0.0, "clipfrac": 0.0}
    updates = 0
    clock.append(time.perf_counter())
    for _ in range(f.ppo_epochs):
        for idx in minibatches(len(scores), f.ppo_buffer_size, device):
            logps = response_logps(parts.model, rollout.select(idx))
            loss, metrics = grpo_loss(logps, old_logps[idx], ref_logps[idx], advantages[idx], mask[idx],
                                      f.ppo_cliprange, kl_weight)
            online.optimizer_step(loss, parts.params)
            totals["loss"] += loss.item()
            totals["kl"] += metrics["kl"].item()
            totals["clipfrac"] += metrics["clipfrac"].item()
            updates += 1
    clock.append(time.perf_counter())
    result = {k: v / updates for k, v in totals.items()}
    result.update(phase_times(clock))
    result.update({"reward": scores.mean().item(), "reward_std": scores.std().item(),
                   "response_length": mask.sum(-1).float().mean().item()})
    return result


def check(cfg) -> None:
    """What must hold before any model loads: a usable reward source."""
    check_reward_source(cfg)


def run(cfg, tokenizer, template, data, resume: str | None) -> tuple[dict, object]:
    parts = prepare_online(cfg, tokenizer, template, data)
    estimator = advantage_estimator_of("grpo", cfg.finetuning.advantage_estimator)
    return parts.online.train(lambda batch: grpo_step(parts, estimator, batch), tokenizer), parts.model
