"""The online loop's sampling and data-parallel bookkeeping: keyed draws that do not depend on the batch,
the hash they come from, and mini-batches that split over processes exactly as over one."""

from __future__ import annotations

import torch

from alignlab.train.ranks import minibatches
from alignlab.train.rollout import KeyedSampling, mix32, sample_keys


def lowbias32(x: int) -> int:
    """The hash written out with Python integers."""
    x ^= x >> 16
    x = x * 0x7FEB352D & 0xFFFFFFFF
    x ^= x >> 15
    x = x * 0x846CA68B & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_mix32_is_lowbias32_without_overflow():
    values = [0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 1, 0xDEADBEEF]
    assert mix32(torch.tensor(values)).tolist() == [lowbias32(v) for v in values]
    assert lowbias32(1) != lowbias32(2) and all(0 <= h < 2**32 for h in mix32(torch.tensor(values)).tolist())


def test_keys_depend_on_seed_step_prompt_and_sample_only():
    keys = sample_keys(3, 5, [7, 9], 2, "cpu")
    assert len(set(keys.tolist())) == 4
    assert sample_keys(3, 5, [9], 2, "cpu").tolist() == keys[2:].tolist()  # prompt 9 alone: same keys
    assert sample_keys(3, 6, [7, 9], 2, "cpu").tolist() != keys.tolist()
    assert sample_keys(4, 5, [7, 9], 2, "cpu").tolist() != keys.tolist()


def test_keyed_draws_follow_the_distribution_and_ignore_the_rest_of_the_batch():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()
    n = 20000
    keys = sample_keys(0, 0, range(n), 1, "cpu")
    draws = KeyedSampling(keys, prompt_width=3)(torch.zeros(n, 3, dtype=torch.long), logits.repeat(n, 1)).argmax(-1)
    freq = torch.bincount(draws, minlength=4).float() / n
    assert torch.allclose(freq, probs, atol=0.015), freq  # 4 standard errors at n = 20000
    # one row drawn in a batch of 3 with a longer prompt (same position in the answer) or alone: the same token
    row = torch.randn(1, 4)
    batch = torch.cat([torch.randn(1, 4), row, torch.randn(1, 4)])
    wide = KeyedSampling(keys[:3], prompt_width=7)(torch.zeros(3, 9, dtype=torch.long), batch).argmax(-1)[1]
    alone = KeyedSampling(keys[1:2], prompt_width=2)(torch.zeros(1, 4, dtype=torch.long), row).argmax(-1)[0]
    assert wide == alone
    # the next position draws afresh
    step0 = KeyedSampling(keys, 3)(torch.zeros(n, 3, dtype=torch.long), logits.repeat(n, 1)).argmax(-1)
    step1 = KeyedSampling(keys, 3)(torch.zeros(n, 4, dtype=torch.long), logits.repeat(n, 1)).argmax(-1)
    assert (step0 == step1).float().mean() < 0.5


def test_minibatches_over_two_processes_are_the_one_process_minibatches_split():
    whole = minibatches(12, 3, seed=11, local=(0, 12), device="cpu")
    first = minibatches(12, 3, seed=11, local=(0, 6), device="cpu")
    second = minibatches(12, 3, seed=11, local=(6, 12), device="cpu")
    assert [len(chunk) for _, chunk in whole] == [4, 4, 4]
    for (idx, chunk), (a, ca), (b, cb) in zip(whole, first, second, strict=True):
        assert chunk.tolist() == ca.tolist() == cb.tolist() and sorted(idx.tolist()) == sorted(chunk.tolist())
        assert sorted(a.tolist() + (b + 6).tolist()) == sorted(chunk.tolist())
    assert sorted(i for idx, _ in whole for i in idx.tolist()) == list(range(12))
