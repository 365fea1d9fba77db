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

from ..model.value_head import ValueHead
from .losses import gae, masked_mean, ppo_policy_loss, ppo_value_loss, whiten
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

KL_HORIZON = 10000


def adaptive_kl(coef: float, current_kl: float, target: float, n_steps: int) -> float:
    """Proportional control of the KL coefficient (Ziegler et al.): error clipped to +-20%."""
    error = max(-0.2, min(0.2, current_kl / target - 1))
    return coef * (1 + error * n_steps / KL_HORIZON)


def run(cfg, tokenizer, template, data, resume: str | None) -> tuple[dict, object]:
    training, f = cfg.training, cfg.finetuning
    device = training.device
    model = build_model(cfg, tokenizer).to(device)
    head = ValueHead(model.config.hidden_size).to(device)
    reference = load_reference(cfg, tokenizer)
    if reference is not None:
        reference.to(device)
    reward = build_reward(cfg, tokenizer, template, device)
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    online = OnlineRun(cfg, model, params, data.train, extra_modules={"value_head": head})
    online.state["kl_coef"] = f.ppo_kl_coef
    gen_kwargs = generation_kwargs(cfg.generating)

    def rollout_and_learn(batch):
        clock = [time.perf_counter()]
        rollout = generate_rollout(model, tokenizer, template, batch, gen_kwargs, 1, device)
        clock.append(time.perf_counter())
        scores = reward(rollout).to(device)
        check_finite("The reward", scores, online.step + 1)
        raw_reward = scores.mean().item()
        if f.ppo_score_norm and len(scores) > 1:
            scores = (scores - scores.mean()) / (scores.std() + 1e-8)
        mask = rollout.response_mask
        clock.append(time.perf_counter())
        with torch.no_grad():
            old_logps, _, hidden = response_logps(model, rollout, with_hidden=True)
            old_values = head(hidden)
            with reference_of(model, reference) as ref:
                ref_logps = response_logps(ref, rollout)
        kl = (old_logps - ref_logps) * mask
        rewards = -online.state["kl_coef"] * kl
        last = (mask.sum(-1) - 1).clamp(min=0)
        rewards[torch.arange(len(scores), device=device), last] += scores
        if f.ppo_whiten_rewards:
            rewards = whiten(rewards, mask, shift_mean=False)
        advantages, returns = gae(rewards, old_values, mask, f.ppo_gamma, f.ppo_lam)
        advantages = whiten(advantages, mask)
        totals: dict[str, float] = {}
        updates = 0
        clock.append(time.perf_counter())
        for _ in range(f.ppo_epochs):
            for idx in minibatches(len(scores), f.ppo_buffer_size, device):
                logps, entropy, hidden = response_logps(model, rollout.select(idx), with_hidden=True)
                values = head(hidden)
                policy_loss, pm = ppo_policy_loss(logps, old_logps[idx], advantages[idx], mask[idx], f.ppo_cliprange)
                value_loss, vm = ppo_value_loss(values, old_values[idx], returns[idx], mask[idx],
                                                f.ppo_cliprange_value)
                loss = policy_loss + f.ppo_vf_coef * value_loss
                online.optimizer_step(loss, params)
                step = {"loss": loss.item(), "loss/policy": policy_loss.item(), "loss/value": value_loss.item(),
                        "entropy": masked_mean(entropy, mask[idx]).item(), **{k: v.item() for k, v in pm.items()},
                        **{k: v.item() for k, v in vm.items()}}
                for key, value in step.items():
                    totals[key] = totals.get(key, 0.0) + value
                updates += 1
        mean_kl = kl.sum(-1).mean().item()
        if f.ppo_adaptive_kl:
            online.state["kl_coef"] = adaptive_kl(online.state["kl_coef"], mean_kl, f.ppo_target, len(scores))
        clock.append(time.perf_counter())
        result = {k: v / updates for k, v in totals.items()}
        result.update({f"time/{name}": clock[i + 1] - clock[i]
                       for i, name in enumerate(("generate", "score", "logps", "learn"))})
        result.update({"reward": raw_reward, "kl": mean_kl, "kl_coef": online.state["kl_coef"],
                       "response_length": mask.sum(-1).float().mean().item()})
        return result

    return online.train(rollout_and_learn, tokenizer), model
