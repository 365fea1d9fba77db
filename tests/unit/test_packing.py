"""Neat packing: every packed example's loss equals its loss computed alone."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignlab.config import load_config
from alignlab.data import SupervisedCollator, get_dataset, get_template
from alignlab.data.encode import IGNORE_INDEX
from tests.conftest import tiny_model


def example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross entropy over the labelled positions of one example."""
    return F.cross_entropy(logits[:-1], labels[1:], ignore_index=IGNORE_INDEX)


def packed_and_single_losses(tokenizer, neat: bool):
    template = get_template("qwen3_nothink", tokenizer)
    args = ["dataset=demo_sft", "max_samples=24", "cutoff_len=200"]
    packed = get_dataset(load_config(args + ["packing=true", f"neat_packing={str(neat).lower()}"]).data,
                         "sft", tokenizer, template).train
    single = get_dataset(load_config(args).data, "sft", tokenizer, template).train
    by_ids = {tuple(r["input_ids"]): r for r in single}
    model = tiny_model(seed=0).eval()
    collate = SupervisedCollator(tokenizer.pad_token_id, neat_packing=neat)
    pairs = []
    with torch.no_grad():
        batch = collate([packed[i] for i in range(len(packed))])
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        for b in range(len(packed)):
            start = 0
            for n in packed[b]["seq_lens"]:
                ids = tuple(packed[b]["input_ids"][start:start + n])
                alone = by_ids[ids]
                alone_logits = model(input_ids=torch.tensor([alone["input_ids"]])).logits[0]
                pairs.append((example_loss(logits[b, start:start + n], batch["labels"][b, start:start + n]),
                              example_loss(alone_logits, torch.tensor(alone["labels"]))))
                start += n
    return packed, pairs


def test_neat_packing_loss_equals_unpacked(tokenizer):
    packed, pairs = packed_and_single_losses(tokenizer, neat=True)
    assert len(packed) < 24 and len(pairs) == 24  # several examples share a row; none is lost
    assert max(len(r["input_ids"]) for r in packed) <= 200
    for packed_loss, single_loss in pairs:
        assert abs(packed_loss.item() - single_loss.item()) < 1e-5


def test_packing_without_neat_mask_leaks_between_examples(tokenizer):
    _, pairs = packed_and_single_losses(tokenizer, neat=False)
    assert max(abs(p.item() - s.item()) for p, s in pairs) > 1e-3
