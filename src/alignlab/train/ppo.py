"""Stage ppo: rollout -> score -> learn with a value head, per-token KL penalty and GAE.

Per-token reward = -kl_coef x (log pi - log ref) at every response token, plus the score at the last
one; advantages by GAE (`ppo_gamma`, `ppo_lam`), whitened; clipped policy loss (`ppo_cliprange`) and
clipped value loss (`ppo_cliprange_value`, weight `ppo_vf_coef`) over `ppo_epochs` passes of
`ppo_buffer_size` mini-batches. The value head shares the policy's backbone (one forward gives logits
and values). The KL coefficient adapts towards `ppo_target` (a controller whose state is checkpointed).
"""

from __future__ import annotations

import time

import torch

from .losses import gae, kl_penalized_rewards, masked_mean, ppo_policy_loss, ppo_value_loss, whiten
from .online import OnlineParts, check_online, phase_times, prepare_online, sample_and_score
from .ranks import minibatches
from .reference import reference_of
from .rollout import policy_outputs, response_logps

KL_HORIZON = 10000


def adaptive_kl(coef: float, current_kl: float, target: float, n_steps: int) -> float:
    """Proportional control of the KL coefficient (Ziegler et al.): error clipped to +-20%."""
    error = max(-0.2, min(0.2, current_kl / target - 1))
    return coef * (1 + error * n_steps / KL_HORIZON)


def ppo_step(parts: OnlineParts, batch: list[dict], indices: list[int]) -> dict:
    """Rollout, score, GAE advantages, then `ppo_epochs` passes of clipped policy + value updates (score
    normalisation, whitening and each mini-batch over the step's samples on all processes)."""
    f, online, device = parts.finetuning, parts.online, parts.device
    rollout, scores, every, clock = sample_and_score(parts, batch, indices, 1)
    raw_reward = every.mean().item()
    if f.ppo_score_norm and len(every) > 1:
        scores = (scores - every.mean()) / (every.std() + 1e-8)
    mask = rollout.response_mask
    with torch.no_grad():
        old_logps, _, hidden = response_logps(parts.model, rollout, with_hidden=True)
        old_values = parts.head(hidden)
        with reference_of(parts.model, parts.reference) as ref:
            ref_logps = response_logps(ref, rollout)
    rewards, kl = kl_penalized_rewards(scores, old_logps, ref_logps, mask, online.state["kl_coef"])
    if f.ppo_whiten_rewards:
        rewards = whiten(rewards, mask, shift_mean=False, reduce=online.ranks.sum)
    advantages, returns = gae(rewards, old_values, mask, f.ppo_gamma, f.ppo_lam)
    advantages = whiten(advantages, mask, reduce=online.ranks.sum)
    total, local = online.samples(len(scores))
    lengths = online.ranks.gather(mask.sum(-1))
    totals: dict[str, float] = {}
    updates = 0
    clock.append(time.perf_counter())
    for epoch in range(f.ppo_epochs):
        for idx, chunk in minibatches(total, f.ppo_buffer_size, online.order_seed(epoch), local, device):
            tokens = lengths[chunk].sum()
            logps, entropy, hidden = policy_outputs(parts.model, rollout, idx, with_hidden=True)
            values = parts.head(hidden)
            policy_loss, pm = ppo_policy_loss(logps, old_logps[idx], advantages[idx], mask[idx], f.ppo_cliprange,
                                              tokens)
            value_loss, vm = ppo_value_loss(values, old_values[idx], returns[idx], mask[idx],
                                            f.ppo_cliprange_value, tokens)
            loss = policy_loss + f.ppo_vf_coef * value_loss
            step = online.optimizer_step(loss, parts.params, {
                "loss/policy": policy_loss, "loss/value": value_loss,
                "entropy": masked_mean(entropy, mask[idx], total=tokens), **pm, **vm})
            step.pop("grad_norm")
            for key, value in step.items():
                totals[key] = totals.get(key, 0.0) + value
            updates += 1
    mean_kl = (online.ranks.sum(kl.sum()) / len(every)).item()
    if f.ppo_adaptive_kl:
        online.state["kl_coef"] = adaptive_kl(online.state["kl_coef"], mean_kl, f.ppo_target, len(every))
    clock.append(time.perf_counter())
    result = {k: v / updates for k, v in totals.items()}
    result.update(phase_times(clock))
    result.update({"reward": raw_reward, "kl": mean_kl, "kl_coef": online.state["kl_coef"],
                   "response_length": lengths.float().mean().item()})
    return result


def check(cfg) -> None:
    """What must hold before any model loads (see online.check_online)."""
    check_online(cfg)


def run(cfg, tokenizer, template, data, resume: str | None) -> tuple[dict, object]:
    parts = prepare_online(cfg, tokenizer, template, data, with_value_head=True)
    parts.online.state["kl_coef"] = cfg.finetuning.ppo_kl_coef
    return parts.online.train(lambda batch, indices: ppo_step(parts, batch, indices), tokenizer), parts.model
