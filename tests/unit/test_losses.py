"""Every loss against arithmetic written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from alignlab.config.stages import ADVANTAGE_ESTIMATORS, PREFERENCE_LOSSES
from alignlab.train import losses
from alignlab.train.losses import (
    kto_loss,
    orpo_loss,
    pairwise_reward_loss,
    sequence_logps,
    simpo_loss,
)

t = torch.tensor


def dpo_loss(pc, pr, rc, rr, beta, loss_type="sigmoid", label_smoothing=0.0):
    """The reference-based loss the PREFERENCE_LOSSES table names for `loss_type`."""
    spec = PREFERENCE_LOSSES[loss_type]
    assert spec.needs_reference
    return getattr(losses, spec.fn)(pc, pr, rc, rr, beta=beta, label_smoothing=label_smoothing)


def close(a, b, tol=1e-6):
    return abs(float(a) - b) < tol


def test_pairwise_reward_loss():
    loss, m = pairwise_reward_loss(t([2.0, 0.5]), t([1.0, 1.5]))
    # margins +1 and -1: log(1 + e^-1) = 0.3132617, log(1 + e^1) = 1.3132617, mean 0.8132617
    assert close(loss, 0.8132617)
    assert close(m["accuracy"], 0.5) and close(m["rewards/chosen"], 1.25)
    assert close(m["rewards/rejected"], 1.25) and close(m["rewards/margins"], 0.0)


# policy chosen -1, rejected -3; reference chosen -2, rejected -2.5; beta 0.1
# logits = (-1 + 3) - (-2 + 2.5) = 1.5; beta * logits = 0.15
DPO_ARGS = (t([-1.0]), t([-3.0]), t([-2.0]), t([-2.5]), 0.1)


def test_dpo_sigmoid_and_rewards():
    loss, m = dpo_loss(*DPO_ARGS, loss_type="sigmoid")
    assert close(loss, math.log(1 + math.exp(-0.15)))  # 0.6209573
    assert close(m["rewards/chosen"], 0.1) and close(m["rewards/rejected"], -0.05)  # 0.1*(-1+2), 0.1*(-3+2.5)
    assert close(m["rewards/margins"], 0.15) and close(m["rewards/accuracies"], 1.0)


def test_dpo_label_smoothing_hinge_ipo():
    loss, _ = dpo_loss(*DPO_ARGS, loss_type="sigmoid", label_smoothing=0.1)
    assert close(loss, 0.9 * 0.6209573 + 0.1 * 0.7709573)  # 0.1 * log(1 + e^0.15)
    loss, _ = dpo_loss(*DPO_ARGS, loss_type="hinge")
    assert close(loss, 0.85)  # relu(1 - 0.15)
    loss, _ = dpo_loss(*DPO_ARGS, loss_type="ipo")
    assert close(loss, 12.25)  # (1.5 - 1 / (2 * 0.1))^2 = (-3.5)^2


def test_dpo_kto_pair():
    # chosen ratios +1, +2 (KL_c = 1.5); rejected ratios -0.5, +1.5 (KL_r = 0.5); beta 0.1
    loss, _ = dpo_loss(t([-1.0, -1.0]), t([-3.0, -1.0]), t([-2.0, -3.0]), t([-2.5, -2.5]), 0.1, "kto_pair")
    sig = lambda x: 1 / (1 + math.exp(-x))
    chosen = [1 - sig(0.1 * (1 - 0.5)), 1 - sig(0.1 * (2 - 0.5))]
    rejected = [1 - sig(0.1 * (1.5 + 0.5)), 1 - sig(0.1 * (1.5 - 1.5))]
    assert close(loss, sum(chosen + rejected) / 4)
    # negative mean ratios clamp the KL baselines at 0
    loss, _ = dpo_loss(t([-3.0]), t([-3.0]), t([-2.0]), t([-2.0]), 0.1, "kto_pair")
    assert close(loss, ((1 - sig(-0.1)) + (1 - sig(0.1))) / 2)


def test_rewards_accuracies_is_share_of_positive_margins():
    _, m = dpo_loss(t([-1.0, -2.0, -1.0]), t([-2.0, -1.0, -1.0]), t([0.0, 0.0, 0.0]), t([0.0, 0.0, 0.0]), 1.0)
    assert close(m["rewards/accuracies"], 1 / 3)  # +1, -1, 0: only the first margin is positive


def test_orpo():
    # chosen p = 0.5, rejected p = 0.25 (mean per-token): odds 1 and 1/3, log odds ratio log 3
    loss, m = orpo_loss(t([math.log(0.5)]), t([math.log(0.25)]), beta=0.1)
    assert close(m["odds_ratio_loss"], math.log(4 / 3))  # -log sigmoid(log 3) = log(1 + 1/3)
    assert close(m["sft_loss"], math.log(2))
    assert close(loss, math.log(2) + 0.1 * math.log(4 / 3))  # 0.7219149
    assert close(m["rewards/chosen"], 0.1 * math.log(0.5))


def test_simpo():
    loss, m = simpo_loss(t([-0.5]), t([-1.0]), beta=2.0, gamma=0.5)
    # beta * ((-0.5 + 1.0) - 0.5 / 2) = 2 * 0.25 = 0.5 -> log(1 + e^-0.5) = 0.4740770
    assert close(loss, math.log(1 + math.exp(-0.5)))
    assert close(m["rewards/margins"], 1.0)


def test_kto():
    args = (t([-1.0]), t([-2.0]), t([-1.5, -1.2]), t([-1.5]), t([-1.8]), t([-1.7, -1.6]), 0.5)
    loss, m = kto_loss(*args)
    # kl = mean(0.2, 0.4) = 0.3; chosen ratio 0.5, rejected ratio -0.2
    chosen = 1 - 1 / (1 + math.exp(-0.5 * (0.5 - 0.3)))  # 1 - sigmoid(0.1) = 0.4750208
    rejected = 1 - 1 / (1 + math.exp(-0.5 * (0.3 + 0.2)))  # 1 - sigmoid(0.25) = 0.4378235
    assert close(m["kl"], 0.3) and close(loss, (chosen + rejected) / 2)
    assert close(m["rewards/chosen"], 0.25) and close(m["rewards/rejected"], -0.1)
    loss, _ = kto_loss(*args, chosen_weight=2.0)
    assert close(loss, (2 * chosen + rejected) / 2)
    # the KL baseline is clamped at zero
    _, m = kto_loss(t([-1.0]), t([-2.0]), t([-3.0]), t([-1.0]), t([-2.0]), t([-1.0]), 0.5)
    assert close(m["kl"], 0.0)


def test_sequence_logps_sum_average_and_length_desensitised():
    logits = torch.zeros(1, 4, 2)  # uniform over 2 tokens: every token log 0.5
    labels = t([[-100, 1, 0, 1]])  # 3 answer tokens after the shift
    logps, valid = sequence_logps(logits, labels)
    assert close(logps, 3 * math.log(0.5)) and int(valid) == 3
    avg, _ = sequence_logps(logits, labels, average=True)
    assert close(avg, math.log(0.5))
    ld, _ = sequence_logps(logits, labels, ld_alpha=0.5, public_len=t([1]))
    assert close(ld, math.log(0.5) + 0.5 * 2 * math.log(0.5))


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo", "kto_pair"])
def test_dpo_loss_has_gradients(loss_type):
    pc = t([-1.0], requires_grad=True)
    loss, _ = dpo_loss(pc, t([-3.0]), t([-2.0]), t([-2.5]), 0.1, loss_type=loss_type)
    loss.backward()
    assert pc.grad is not None and pc.grad.item() != 0


def slow_gae(rewards, values, gamma, lam):
    """Textbook GAE for one unpadded sequence, written as plain Python loops."""
    n = len(rewards)
    advantages = [0.0] * n
    last = 0.0
    for t in reversed(range(n)):
        next_value = values[t + 1] if t + 1 < n else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        last = delta + gamma * lam * last
        advantages[t] = last
    return advantages


def test_gae_matches_a_slow_loop_and_ignores_padding():
    from alignlab.train.losses import gae

    rewards = t([[0.0, 0.0, 1.0, 9.0], [0.5, -1.0, 0.0, 0.0]])
    values = t([[0.2, 0.4, 0.6, 7.0], [0.1, 0.3, 5.0, 5.0]])
    mask = t([[1, 1, 1, 0], [1, 1, 0, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    expected0 = slow_gae([0.0, 0.0, 1.0], [0.2, 0.4, 0.6], 0.9, 0.8)
    expected1 = slow_gae([0.5, -1.0], [0.1, 0.3], 0.9, 0.8)
    assert torch.allclose(adv[0, :3], t(expected0)) and torch.allclose(adv[1, :2], t(expected1))
    assert adv[0, 3] == 0 and adv[1, 2:].abs().sum() == 0
    # by hand for row 1: delta_1 = -1 - 0.3 = -1.3; delta_0 = 0.5 + 0.9*0.3 - 0.1 = 0.67; A_0 = 0.67 + 0.72*-1.3
    assert close(adv[1, 1], -1.3) and close(adv[1, 0], 0.67 + 0.72 * -1.3)
    assert close(ret[1, 0], 0.67 + 0.72 * -1.3 + 0.1)


def test_whiten():
    from alignlab.train.losses import whiten

    x = t([[1.0, 2.0, 3.0, 100.0]])
    mask = t([[1, 1, 1, 0]])
    w = whiten(x, mask)
    # mean 2, unbiased variance ((1)^2 + 0 + 1^2) / 2 = 1 -> (-1, 0, 1)
    assert torch.allclose(w[0, :3], t([-1.0, 0.0, 1.0]), atol=1e-4)
    assert torch.allclose(whiten(x, mask, shift_mean=False)[0, :3], t([1.0, 2.0, 3.0]), atol=1e-4)


def test_ppo_clipped_policy_and_value_losses():
    from alignlab.train.losses import ppo_policy_loss, ppo_value_loss

    old = t([[0.0, 0.0]])
    logps = t([[math.log(1.5), math.log(0.5)]])  # ratios 1.5 and 0.5
    adv = t([[1.0, -1.0]])
    mask = t([[1, 1]])
    loss, m = ppo_policy_loss(logps, old, adv, mask, cliprange=0.2)
    # token 0: max(-1*1.5, -1*1.2) = -1.2 (clipped); token 1: max(1*0.5, 1*0.8) = 0.8 (clipped); mean -0.2
    assert close(loss, -0.2) and close(m["clipfrac"], 1.0)
    assert close(m["approx_kl"], 0.5 * (math.log(1.5) ** 2 + math.log(0.5) ** 2) / 2)
    values, old_values, returns = t([[1.0, 0.0]]), t([[0.5, 0.0]]), t([[2.0, 1.0]])
    vloss, vm = ppo_value_loss(values, old_values, returns, mask, cliprange_value=0.2)
    # token 0: max((1-2)^2, (0.7-2)^2) = 1.69; token 1: max(1, 1) = 1; 0.5 * mean = 0.6725
    assert close(vloss, 0.6725) and close(vm["vf_clipfrac"], 0.5)


def test_k3_group_advantages_and_grpo_loss():
    from alignlab.train.losses import group_advantages, grpo_loss, k3_kl

    kl = k3_kl(t([math.log(0.5)]), t([math.log(0.25)]))
    assert close(kl, 0.5 - math.log(0.5) - 1)  # exp(ref - pi) = 0.5; -(ref - pi) = log 2
    assert k3_kl(t([-1.0]), t([-1.0])).item() == 0
    adv = group_advantages(t([1.0, 0.0, 0.0, 0.0, 2.0, 2.0]), group_size=3)
    std = math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2)  # unbiased std of (1, 0, 0)
    assert close(adv[0], (2 / 3) / (std + 1e-4), 1e-5) and close(adv[1], -(1 / 3) / (std + 1e-4), 1e-5)
    assert close(adv[3], -2 / 3 * 2 / (math.sqrt(4 / 3) + 1e-4), 1e-5)
    logps = t([[-1.0, -1.0]])
    loss, m = grpo_loss(logps, logps, logps, t([2.0]), t([[1, 1]]), cliprange=0.2, beta=0.1)
    assert close(loss, -2.0) and close(m["kl"], 0.0)  # ratio 1, no KL: -(1 * 2)


def test_every_preference_loss_in_the_table_is_a_function_of_losses_py():
    for spec in PREFERENCE_LOSSES.values():
        assert callable(getattr(losses, spec.fn)), spec
    assert {n for n, s in PREFERENCE_LOSSES.items() if not s.needs_reference} == {"orpo", "simpo"}


def test_bco_pair_by_hand_with_its_running_reward_mean():
    sig = lambda x: 1 / (1 + math.exp(-x))
    # rewards 0.1 * (-1 + 2) = 0.1 and 0.1 * (-3 + 2.5) = -0.05; the first batch's mean is the running mean
    loss, m = dpo_loss(*DPO_ARGS, loss_type="bco_pair")
    delta = (0.1 - 0.05) / 2
    assert close(m["bco/delta"], delta)
    assert close(loss, -math.log(sig(0.1 - delta)) - math.log(sig(-(-0.05 - delta))))
    assert close(m["state/reward_mean"], delta) and close(m["state/reward_count"], 1)
    # second batch: rewards 0 and 0 -> running mean of the two batch means (TRL's RunningMoments)
    loss, m = losses.bco_pair_loss(t([-2.0]), t([-2.0]), t([-2.0]), t([-2.0]), beta=0.1,
                                   reward_mean=m["state/reward_mean"], reward_count=m["state/reward_count"])
    delta2 = (delta + 0.0) / 2
    assert close(m["bco/delta"], delta2)
    assert close(loss, -math.log(sig(-delta2)) - math.log(sig(delta2)))


def test_kl_penalized_rewards_by_hand():
    scores = t([1.0, 2.0])
    logps = t([[-1.0, -1.0, 0.0], [-1.0, -2.0, -1.0]])
    ref = t([[-1.5, -1.0, 0.0], [-1.0, -1.0, -1.0]])
    mask = t([[1, 1, 0], [1, 1, 1]])
    rewards, kl = losses.kl_penalized_rewards(scores, logps, ref, mask, kl_coef=0.1)
    assert torch.allclose(kl, t([[0.5, 0.0, 0.0], [0.0, -1.0, 0.0]]))
    # -0.1 x kl per token; the score lands on the last response token (index 1, then index 2)
    assert torch.allclose(rewards, t([[-0.05, 1.0, 0.0], [0.0, 0.1, 2.0]]))


def test_rloo_leave_one_out_baseline_by_hand():
    adv = losses.rloo_advantages(t([1.0, 0.0, 0.0, 2.0, 2.0, 2.0]), group_size=3)
    # 1 - mean(0, 0) = 1; 0 - mean(1, 0) = -0.5; equal rewards give 0
    assert torch.allclose(adv, t([1.0, -0.5, -0.5, 0.0, 0.0, 0.0]))


def test_reinforce_pp_returns_whitened_over_the_batch_by_hand():
    rewards = t([[0.0, 1.0, 0.0], [0.5, 0.0, 2.0]])
    mask = t([[1, 1, 0], [1, 1, 1]])
    adv = losses.reinforce_pp_advantages(rewards, mask, gamma=1.0)
    # returns-to-go [1, 1, -] and [2.5, 2, 2]: mean 1.7, unbiased variance 1.8 / 4 = 0.45
    std = math.sqrt(0.45 + 1e-8)
    expected = t([[-0.7 / std, -0.7 / std, 0.0], [0.8 / std, 0.3 / std, 0.3 / std]])
    assert torch.allclose(adv, expected, atol=1e-5)
    discounted = losses.reinforce_pp_advantages(t([[0.0, 1.0]]), t([[1, 1]]), gamma=0.5)
    assert discounted[0, 0] < 0 < discounted[0, 1]  # returns 0.5 and 1 around their mean


def test_grpo_loss_with_ratio_and_kl_by_hand():
    from alignlab.train.losses import grpo_loss

    logps, old, ref, mask = t([[-1.0, -2.0]]), t([[-1.2, -1.5]]), t([[-1.0, -1.8]]), t([[1, 1]])
    r0, r1 = math.exp(0.2), math.exp(-0.5)  # 1.2214 (clipped to 1.2), 0.6065 (clip 0.8 is not taken: min)
    kl1 = math.exp(0.2) - 0.2 - 1  # k3 at token 1; token 0 has ref == pi
    loss, m = grpo_loss(logps, old, ref, t([1.0]), mask, cliprange=0.2, beta=0.1)
    assert close(loss, (-1.2 - (r1 - 0.1 * kl1)) / 2)
    assert close(m["kl"], kl1 / 2) and close(m["clipfrac"], 1.0)
    loss, _ = grpo_loss(logps, old, ref, t([-1.0]), mask, cliprange=0.2, beta=0.1)
    assert close(loss, (r0 + (0.8 + 0.1 * kl1)) / 2)  # negative advantage: min(-r, -clip(r))
    # one advantage per token gives the same loss as the per-sequence one broadcast
    per_token, _ = grpo_loss(logps, old, ref, t([[1.0, 1.0]]), mask, cliprange=0.2, beta=0.1)
    assert close(per_token, (-1.2 - (r1 - 0.1 * kl1)) / 2)


def test_grpo_stage_runs_every_critic_free_estimator_of_the_table():
    from alignlab.train.grpo import ADVANTAGES

    assert set(ADVANTAGES) == {n for n, stage in ADVANTAGE_ESTIMATORS.items() if stage == "grpo"}


def test_shares_of_a_batch_split_in_two_add_up_to_the_whole_batch():
    """Data parallel: each process passes the whole mini-batch's sequence and token counts, and the shares
    of the loss and metrics sum (over the processes) to what one process computes on the whole batch."""
    from alignlab.train.losses import grpo_loss, masked_mean, ppo_policy_loss, ppo_value_loss

    torch.manual_seed(0)
    logps, old, ref, values, old_values, returns = (torch.randn(6, 5) * 0.3 for _ in range(6))
    adv = torch.randn(6)
    mask = t([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    halves = (slice(0, 2), slice(2, 6))  # uneven: 2 and 4 sequences, 8 and 12 tokens
    tokens = mask.sum()
    whole, wm = grpo_loss(logps, old, ref, adv, mask, cliprange=0.2, beta=0.1)
    parts = [grpo_loss(logps[h], old[h], ref[h], adv[h], mask[h], 0.2, 0.1, sequences=6, tokens=tokens) for h in halves]
    assert close(sum(p[0] for p in parts), whole) and close(sum(p[1]["kl"] for p in parts), wm["kl"])
    assert close(sum(p[1]["clipfrac"] for p in parts), wm["clipfrac"])
    whole, wm = ppo_policy_loss(logps, old, adv[:, None].expand(6, 5), mask, 0.2)
    parts = [ppo_policy_loss(logps[h], old[h], adv[h, None].expand(-1, 5), mask[h], 0.2, tokens) for h in halves]
    assert close(sum(p[0] for p in parts), whole) and close(sum(p[1]["approx_kl"] for p in parts), wm["approx_kl"])
    whole, _ = ppo_value_loss(values, old_values, returns, mask, 0.2)
    assert close(sum(ppo_value_loss(values[h], old_values[h], returns[h], mask[h], 0.2, tokens)[0] for h in halves),
                 whole)
    assert close(sum(masked_mean(values[h], mask[h], total=tokens) for h in halves), masked_mean(values, mask))


def test_whiten_with_a_reduce_uses_the_whole_batch_statistics():
    """`reduce` adds the other processes' sums: here the other half of the batch, computed beside it."""
    from alignlab.train.losses import whiten

    x = t([[1.0, 2.0, 3.0], [4.0, 8.0, 0.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    whole = whiten(x, mask)
    other = {"count": mask[1].sum().float(), "sum": (x[1] * mask[1]).sum()}
    mean = (x * mask).sum() / mask.sum()

    def reduce(tensor):  # the sums the second process would contribute
        if tensor.dim():
            return tensor + torch.stack([other["count"], other["sum"]])
        return tensor + ((x[1] - mean) ** 2 * mask[1]).sum()

    assert torch.allclose(whiten(x[:1], mask[:1], reduce=reduce), whole[:1], atol=1e-6)


def test_sequence_logps_of_labelled_only_logits_equal_the_full_logits():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 5)
    labels = t([[-100, -100, 3, 1, 4, -100], [-100, 2, 0, -100, -100, -100]])
    keep = labels[:, 1:] != -100
    labelled = logits[:, :-1][keep]  # (N, V) as trainer.labelled_logits yields them
    for kwargs in ({}, {"average": True}, {"ld_alpha": 0.5, "public_len": t([1, 2])}):
        full, valid = sequence_logps(logits, labels, **kwargs)
        part, valid_part = sequence_logps(labelled, labels, **kwargs)
        assert torch.allclose(full, part, atol=1e-6) and torch.equal(valid, valid_part)


def test_labelled_logits_keep_logps_and_gradients_of_plain_and_peft_models():
    from peft import LoraConfig, get_peft_model

    from alignlab.train.trainer import labelled_logits
    from tests.conftest import tiny_model

    ids = torch.randint(3, 100, (2, 7), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[0, :3] = -100
    labels[1, :5] = -100
    labels[1, 6:] = -100
    for model in (tiny_model(seed=0), get_peft_model(tiny_model(seed=0), LoraConfig(target_modules=["q_proj"]))):
        grads = []
        for swap in (False, True):
            model.zero_grad()
            if swap:
                with labelled_logits(model, labels):
                    logits = model(input_ids=ids).logits
                assert logits.dim() == 2 and logits.shape[0] == int((labels[:, 1:] != -100).sum())
            else:
                logits = model(input_ids=ids).logits
            logps, _ = sequence_logps(logits, labels)
            logps.sum().backward()
            grads.append((logps.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
        assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
        assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(grads[0][1], grads[1][1]))  # float rounding only
        assert model(input_ids=ids).logits.dim() == 3  # the head is back after the block
