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
from .online import OnlineParts, check_online, phase_times, prepare_online, sample_and_score
from .ranks import minibatches
from .reference import reference_of
from .rollout import policy_outputs, response_logps

# advantage_estimator -> (scores, old_logps, ref_logps, mask, finetuning args, reduce) -> (advantages,
# weight of the k3 KL term in the loss); `reduce` sums over the processes (a batch-wide baseline needs it,
# a group never spans two). config/stages.py's ADVANTAGE_ESTIMATORS names those of stage grpo.
ADVANTAGES = {
    "grpo": lambda scores, logps, ref, mask, f, reduce: (group_advantages(scores, f.grpo_group_size), f.grpo_beta),
    "rloo": lambda scores, logps, ref, mask, f, reduce: (rloo_advantages(scores, f.grpo_group_size), f.grpo_beta),
    "reinforce_pp": lambda scores, logps, ref, mask, f, reduce: (
        reinforce_pp_advantages(kl_penalized_rewards(scores, logps, ref, mask, f.grpo_beta)[0], mask, f.ppo_gamma,
                                reduce), 0.0),
}


def on_policy(f, estimator: str) -> bool:
    """One pass in one mini-batch: the update's own log-probs are the rollout's, so the separate pass that
    computes them before learning is skipped (reinforce_pp needs them for its rewards)."""
    return f.ppo_epochs == 1 and f.ppo_buffer_size == 1 and estimator != "reinforce_pp"


def grpo_step(parts: OnlineParts, estimator: str, batch: list[dict], indices: list[int]) -> dict:
    """Rollout groups, score, advantages by the estimator, then `ppo_epochs` passes of clipped updates
    (each mini-batch drawn from the step's samples on all processes; see OnlineRun.optimizer_step).
    No reference pass with `grpo_beta: 0`; no old log-prob pass when on-policy."""
    f, online, device = parts.finetuning, parts.online, parts.device
    rollout, scores, every, clock = sample_and_score(parts, batch, indices, f.grpo_group_size)
    mask = rollout.response_mask
    old_logps = ref_logps = None
    with torch.no_grad():
        if not on_policy(f, estimator):
            old_logps = response_logps(parts.model, rollout)
        if f.grpo_beta:
            with reference_of(parts.model, parts.reference) as ref:
                ref_logps = response_logps(ref, rollout)
    advantages, kl_weight = ADVANTAGES[estimator](scores, old_logps, old_logps if ref_logps is None else ref_logps,
                                                  mask, f, online.ranks.sum)
    total, local = online.samples(len(scores))
    lengths = online.ranks.gather(mask.sum(-1))
    totals = {"loss": 0.0, "kl": 0.0, "clipfrac": 0.0}
    updates = 0
    clock.append(time.perf_counter())
    for epoch in range(f.ppo_epochs):
        for idx, chunk in minibatches(total, f.ppo_buffer_size, online.order_seed(epoch), local, device):
            logps = policy_outputs(parts.model, rollout, idx)
            old = logps.detach() if old_logps is None else old_logps[idx]
            ref = logps.detach() if ref_logps is None else ref_logps[idx]  # beta 0: no KL term, kl logged 0
            loss, metrics = grpo_loss(logps, old, ref, advantages[idx],
                                      mask[idx], f.ppo_cliprange, kl_weight, sequences=len(chunk),
                                      tokens=lengths[chunk].sum())
            step = online.optimizer_step(loss, parts.params, metrics)
            for key in totals:
                totals[key] += step[key]
            updates += 1
    clock.append(time.perf_counter())
    result = {k: v / updates for k, v in totals.items()}
    result.update(phase_times(clock))
    result.update({"reward": every.mean().item(), "reward_std": every.std().item(),
                   "response_length": lengths.float().mean().item()})
    return result


def check(cfg) -> None:
    """What must hold before any model loads (see online.check_online)."""
    check_online(cfg)


def run(cfg, tokenizer, template, data, resume: str | None) -> tuple[dict, object]:
    parts = prepare_online(cfg, tokenizer, template, data)
    estimator = advantage_estimator_of("grpo", cfg.finetuning.advantage_estimator)
    return parts.online.train(lambda batch, indices: grpo_step(parts, estimator, batch, indices), tokenizer), parts.model
