"""Batches of encoded examples -> padded tensors.

Neat-packed rows get a 4-D block-diagonal causal boolean mask `(B, 1, T, T)` so packed examples
cannot see each other; with SDPA on CPU, reset position ids alone do not isolate them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .encode import IGNORE_INDEX


def _pad(rows: list[list[int]], value: int, length: int) -> torch.Tensor:
    return torch.tensor([r + [value] * (length - len(r)) for r in rows], dtype=torch.long)


def pad_rows(rows: list[list[int]], pad_id: int | None, side: str = "left", device=None):
    """Token rows -> (ids, attention_mask) of one width: padding on the left (prompts to generate from)
    or the right (sequences to score at their last token)."""
    pad_id = pad_id or 0
    width = max(map(len, rows))
    if side == "left":
        ids = [[pad_id] * (width - len(r)) + list(r) for r in rows]
        mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
    else:
        ids = [list(r) + [pad_id] * (width - len(r)) for r in rows]
        mask = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
    return torch.tensor(ids, device=device), torch.tensor(mask, device=device)


def block_causal_mask(seq_lens_batch: list[list[int]], length: int) -> torch.Tensor:
    """(B, 1, T, T) bool: token i attends to j iff both are in the same packed example and j <= i.

    Padding positions attend only to themselves, so no row of the mask is empty.
    """
    mask = torch.zeros(len(seq_lens_batch), 1, length, length, dtype=torch.bool)
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool))
    for b, seq_lens in enumerate(seq_lens_batch):
        start = 0
        for n in seq_lens:
            mask[b, 0, start:start + n, start:start + n] = causal[:n, :n]
            start += n
        idx = torch.arange(start, length)
        mask[b, 0, idx, idx] = True
    return mask


@dataclass
class SupervisedCollator:
    """pt/sft batches: input_ids, labels, attention_mask (2-D, or 4-D for neat packing), position_ids."""

    pad_token_id: int
    neat_packing: bool = False
    pad_to_multiple_of: int | None = None

    def _length(self, rows) -> int:
        length = max(len(r) for r in rows)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        return length

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        ids = [list(f["input_ids"]) for f in features]
        length = self._length(ids)
        batch = {
            "input_ids": _pad(ids, self.pad_token_id, length),
            "labels": _pad([list(f["labels"]) for f in features], IGNORE_INDEX, length),
        }
        if "position_ids" in features[0]:
            batch["position_ids"] = _pad([list(f["position_ids"]) for f in features], 0, length)
        if self.neat_packing and "seq_lens" in features[0]:
            batch["attention_mask"] = block_causal_mask([list(f["seq_lens"]) for f in features], length)
        else:
            batch["attention_mask"] = _pad([[1] * len(r) for r in ids], 0, length)
        return batch


def _scalars(features: list[dict], names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Per-example numbers stored with the data (e.g. precomputed reference log-probs)."""
    return {n: torch.tensor([f[n] for f in features]) for n in names if n in features[0]}


@dataclass
class PairwiseCollator:
    """rm/dpo batches: the chosen rows then the rejected rows, padded to one length (2B rows)."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        rows = [f["chosen_input_ids"] for f in features] + [f["rejected_input_ids"] for f in features]
        labels = [f["chosen_labels"] for f in features] + [f["rejected_labels"] for f in features]
        batch = SupervisedCollator(self.pad_token_id, pad_to_multiple_of=self.pad_to_multiple_of)(
            [{"input_ids": r, "labels": lab} for r, lab in zip(rows, labels)]
        )
        batch.update(_scalars(features, ("ref_chosen_logps", "ref_rejected_logps")))
        return batch


@dataclass
class FeedbackCollator:
    """kto batches: the B answers, then the B mismatched (KL) answers, padded to one length."""

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        rows = [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features]
        rows += [{"input_ids": f["kl_input_ids"], "labels": f["kl_labels"]} for f in features]
        batch = SupervisedCollator(self.pad_token_id)(rows)
        batch["kto_tags"] = torch.tensor([bool(f["kto_tags"]) for f in features])
        batch.update(_scalars(features, ("ref_logps", "ref_kl_logps")))
        return batch
