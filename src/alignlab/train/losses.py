"""Every loss of every stage, as pure tensor functions: tensors in, (loss, metrics) out.

This module imports only torch. Log-probabilities are per sequence (sum over answer tokens, or the
mean where a loss asks for it); rewards are the implicit rewards of the preference losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def per_position(logits: torch.Tensor, mask: torch.Tensor, fn, labels: torch.Tensor) -> torch.Tensor:
    """(B, T-1) values of `fn(logits, labels[..., None])[..., 0]` at the next-token positions, 0 where
    `mask` (the labelled ones) is False; `logits` are (B, T, V) or (N, V) for the masked positions only."""
    safe = labels.masked_fill(~mask, 0).unsqueeze(-1)
    if logits.dim() == 2:
        values = fn(logits, safe[mask]).squeeze(-1)
        return torch.zeros(mask.shape, dtype=values.dtype, device=values.device).masked_scatter(mask, values)
    return fn(logits[:, :-1], safe).squeeze(-1)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, average: bool = False,
                   ld_alpha: float | None = None, public_len: torch.Tensor | None = None):
    """Per-row log-probability of the labelled tokens (next-token shifted).

    `logits` are (B, T, V), or (N, V) for only the N positions whose next token is labelled (row-major:
    `trainer.labelled_logits`). Returns (logps, valid_len). `average` divides by the number of labelled
    tokens. With `ld_alpha` (LD-DPO) tokens beyond `public_len` (the shorter answer of the pair) count
    with weight ld_alpha.
    """
    labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    token_logps = per_position(logits, mask, lambda x, i: torch.gather(x.float().log_softmax(-1), -1, i), labels)
    weights = mask.float()
    if ld_alpha is not None and public_len is not None:
        position = mask.cumsum(-1)  # 1-based index of each answer token
        verbose = position > public_len.unsqueeze(1)
        weights = torch.where(verbose & mask, torch.full_like(weights, ld_alpha), weights)
    valid = mask.sum(-1)
    logps = (token_logps * weights).sum(-1)
    if average:
        logps = logps / valid.clamp(min=1)
    return logps, valid


def pairwise_reward_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor):
    """Reward model: -log sigmoid(r_chosen - r_rejected), averaged over pairs."""
    margins = chosen_scores - rejected_scores
    loss = -F.logsigmoid(margins).mean()
    metrics = {
        "accuracy": (margins > 0).float().mean(),
        "rewards/chosen": chosen_scores.mean(),
        "rewards/rejected": rejected_scores.mean(),
        "rewards/margins": margins.mean(),
    }
    return loss, metrics


def _log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected):
    """(pi_c - ref_c, pi_r - ref_r): the implicit rewards before beta."""
    return policy_chosen - ref_chosen, policy_rejected - ref_rejected


def _with_reference_rewards(losses, chosen_ratio, rejected_ratio, beta):
    return losses.mean(), _reward_metrics(beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


# Preference losses. Every one takes (chosen, rejected[, ref_chosen, ref_rejected], beta=..., **settings)
# and returns (loss, metrics); config/stages.py's PREFERENCE_LOSSES names them, says which need the
# reference and which take per-token mean log-probs. logits = (pi_c - pi_r) - (ref_c - ref_r).

def dpo_sigmoid_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float,
                     label_smoothing: float = 0.0, **_):
    """DPO: -log sigmoid(beta * logits), with robust label smoothing eps: (1-eps) of it + eps x the flipped."""
    c, r = _log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    logits = c - r
    losses = -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    return _with_reference_rewards(losses, c, r, beta)


def dpo_hinge_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float, **_):
    """SLiC hinge: relu(1 - beta * logits)."""
    c, r = _log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return _with_reference_rewards(torch.relu(1 - beta * (c - r)), c, r, beta)


def ipo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float, **_):
    """IPO: (logits - 1 / (2 beta))^2 on mean per-token log-probs."""
    c, r = _log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return _with_reference_rewards((c - r - 1 / (2 * beta)) ** 2, c, r, beta)


def kto_pair_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float, **_):
    """kto_pair (TRL's DPO-trainer form, which LLaMA-Factory uses): KL_c = max(0, mean(pi_c - ref_c)),
    KL_r likewise; losses 1 - sigmoid(beta * ((pi_c - ref_c) - KL_r)) and 1 - sigmoid(beta * (KL_c -
    (pi_r - ref_r))), averaged over all 2B of them."""
    c, r = _log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    chosen_kl, rejected_kl = c.mean().clamp(min=0), r.mean().clamp(min=0)
    losses = torch.cat([1 - torch.sigmoid(beta * (c - rejected_kl)), 1 - torch.sigmoid(beta * (chosen_kl - r))])
    return _with_reference_rewards(losses, c, r, beta)


def bco_pair_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float,
                  reward_mean: float = 0.0, reward_count: float = 0.0, **_):
    """BCO on pairs (TRL's bco_pair): rewards beta * (pi - ref); the running mean delta of the batch
    reward means (this batch included) shifts them; -log sigmoid(r_c - delta) - log sigmoid(-(r_r - delta)).

    `reward_mean`/`reward_count` are the running state before this batch; the updated state comes back
    in the metrics as `state/reward_mean` and `state/reward_count` for the next call."""
    c, r = _log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    chosen_rewards, rejected_rewards = beta * c, beta * r
    batch_mean = torch.cat([chosen_rewards, rejected_rewards]).mean().detach()
    count = reward_count + 1
    delta = reward_mean + (batch_mean - reward_mean) / count
    losses = -F.logsigmoid(chosen_rewards - delta) - F.logsigmoid(-(rejected_rewards - delta))
    loss, metrics = _with_reference_rewards(losses, c, r, beta)
    metrics.update({"bco/delta": delta, "state/reward_mean": delta, "state/reward_count": count})
    return loss, metrics


def orpo_loss(chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, beta: float, **_):
    """ORPO: -log p(chosen) (mean per token) + beta * -log sigmoid(log odds ratio); no reference."""
    log_odds = (chosen_avg_logps - rejected_avg_logps) - (
        torch.log1p(-torch.exp(chosen_avg_logps)) - torch.log1p(-torch.exp(rejected_avg_logps)))
    sft = -chosen_avg_logps
    odds_ratio = -F.logsigmoid(log_odds)
    losses = sft + beta * odds_ratio
    metrics = _reward_metrics(beta * chosen_avg_logps.detach(), beta * rejected_avg_logps.detach())
    metrics.update({"sft_loss": sft.mean().detach(), "odds_ratio_loss": odds_ratio.mean().detach()})
    return losses.mean(), metrics


def simpo_loss(chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, beta: float, gamma: float,
               **_):
    """SimPO: -log sigmoid(beta * (avg logp_c - avg logp_r) - gamma); no reference."""
    logits = (chosen_avg_logps - rejected_avg_logps) - gamma / beta
    losses = -F.logsigmoid(beta * logits)
    return losses.mean(), _reward_metrics(beta * chosen_avg_logps.detach(), beta * rejected_avg_logps.detach())


def kto_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, policy_kl: torch.Tensor,
             ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, ref_kl: torch.Tensor, beta: float,
             chosen_weight: float = 1.0, rejected_weight: float = 1.0):
    """KTO: desirable answers pushed above, undesirable below, a KL baseline from mismatched pairs.

    kl = max(0, mean(pi_kl - ref_kl)) (no gradient); desirable loss 1 - sigmoid(beta * (ratio - kl)),
    undesirable 1 - sigmoid(beta * (kl - ratio)); the mean over all answers with their weights.
    """
    kl = (policy_kl - ref_kl).mean().clamp(min=0).detach()
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    chosen_losses = chosen_weight * (1 - torch.sigmoid(beta * (chosen_ratio - kl)))
    rejected_losses = rejected_weight * (1 - torch.sigmoid(beta * (kl - rejected_ratio)))
    losses = torch.cat([chosen_losses, rejected_losses])
    metrics = {"kl": kl}
    if len(chosen_ratio):
        metrics["rewards/chosen"] = beta * chosen_ratio.detach().mean()
        metrics["logps/chosen"] = policy_chosen.detach().mean()
    if len(rejected_ratio):
        metrics["rewards/rejected"] = beta * rejected_ratio.detach().mean()
        metrics["logps/rejected"] = policy_rejected.detach().mean()
    if len(chosen_ratio) and len(rejected_ratio):
        metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
    return losses.mean() if len(losses) else losses.sum(), metrics


def _reward_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> dict:
    return {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
    }


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None, total=None) -> torch.Tensor:
    """Mean of the masked entries (along `dim`). With `total` (dim None): the masked sum over `total`, this
    tensor's share of the mean over a larger batch that holds `total` masked entries (data parallel)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / (mask.sum().clamp(min=1) if total is None else max(float(total), 1.0))
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def _same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, reduce=_same) -> torch.Tensor:
    """(x - mean) / std over the masked entries (unbiased variance); keep the mean if not shift_mean.
    `reduce` sums a tensor over the processes holding the rest of the batch (data parallel)."""
    mask = mask.to(values.dtype)
    count, total = reduce(torch.stack([mask.sum(), (values * mask).sum()]))
    mean = total / count.clamp(min=1)
    centred = values - mean
    var = reduce((centred**2 * mask).sum()) / (count - 1).clamp(min=1)
    out = centred * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation over response tokens (B, T); returns (advantages, returns).

    delta_t = r_t + gamma * V_{t+1} - V_t; A_t = delta_t + gamma * lam * A_{t+1}; positions beyond
    the mask contribute nothing. returns = A + V.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        next_value = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        advantages[:, t] = last
    return advantages.detach(), (advantages + values).detach()


def ppo_policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                    mask: torch.Tensor, cliprange: float, tokens=None):
    """Clipped surrogate: mean over tokens of max(-A r, -A clip(r, 1-e, 1+e)), r = exp(logp - old).
    `tokens`: the mini-batch's response tokens over all processes (None: these)."""
    ratio = torch.exp(logps - old_logps)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - cliprange, 1 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask, total=tokens)
    metrics = {
        "clipfrac": masked_mean((clipped > unclipped).float(), mask, total=tokens).detach(),
        "approx_kl": masked_mean(0.5 * (logps - old_logps) ** 2, mask, total=tokens).detach(),
    }
    return loss, metrics


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                   cliprange_value: float, tokens=None):
    """Clipped value loss: 0.5 * mean over tokens of max((V - R)^2, (clip(V, V_old +- e) - R)^2)."""
    clipped = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    loss = 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask, total=tokens)
    return loss, {"vf_clipfrac": masked_mean(((clipped - returns) ** 2 > (values - returns) ** 2).float(),
                                             mask, total=tokens).detach()}


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || ref): exp(ref - pi) - (ref - pi) - 1 (always >= 0)."""
    diff = ref_logps - logps
    return torch.exp(diff) - diff - 1


def kl_penalized_rewards(scores: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor,
                         kl_coef: float):
    """Per-token rewards (B, T): -kl_coef x (log pi - log ref) at every response token, plus each
    sequence's score at its last one. Returns (rewards, per-token KL estimate (log pi - log ref) masked)."""
    kl = (logps - ref_logps) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(-1) - 1).clamp(min=0)
    rewards[torch.arange(len(scores), device=rewards.device), last] += scores
    return rewards, kl


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO: each reward minus the mean of the other samples of its prompt (groups are consecutive)."""
    grouped = rewards.view(-1, group_size)
    others = (grouped.sum(-1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others).view(-1)


def reinforce_pp_advantages(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
                            reduce=_same) -> torch.Tensor:
    """REINFORCE++: discounted return-to-go of the KL-penalised token rewards, whitened over every
    response token of the batch (a global baseline, no critic, no per-prompt group)."""
    returns, _ = gae(token_rewards, torch.zeros_like(token_rewards), mask, gamma, 1.0)
    return whiten(returns, mask, reduce=reduce) * mask


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """GRPO: each reward minus its group's mean, divided by the group's std (groups are consecutive)."""
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(-1, keepdim=True)
    std = grouped.std(-1, keepdim=True)
    return ((grouped - mean) / (std + eps)).view(-1)


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, cliprange: float, beta: float, sequences=None, tokens=None):
    """GRPO: clipped surrogate plus beta * k3 KL to the reference, averaged per sequence over its
    tokens, then over sequences. `advantages` is one per sequence (B,) or one per token (B, T).
    `sequences`, `tokens`: the mini-batch's sequences and response tokens over all processes (None: these);
    the loss and metrics are then this part's share of the whole mini-batch's."""
    ratio = torch.exp(logps - old_logps)
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    surrogate = torch.min(ratio * adv, ratio.clamp(1 - cliprange, 1 + cliprange) * adv)
    kl = k3_kl(logps, ref_logps)
    per_token = -(surrogate - beta * kl)
    loss = masked_mean(per_token, mask, dim=1).sum() / max(len(logps) if sequences is None else sequences, 1)
    metrics = {
        "kl": masked_mean(kl, mask, total=tokens).detach(),
        "clipfrac": masked_mean(((ratio - 1).abs() > cliprange).float(), mask, total=tokens).detach(),
    }
    return loss, metrics
