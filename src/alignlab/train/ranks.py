"""The processes of an online run (torchrun) and the collective operations its loop needs."""

from __future__ import annotations

import math

import torch


class Ranks:
    """The processes of a run (torchrun; one process: every method is a no-op) and the collective
    operations the online loop needs: sums, gathers, the gradient sum and one writer."""

    def __init__(self):
        import torch.distributed as dist

        self.dist = dist if dist.is_available() and dist.is_initialized() else None
        self.rank = self.dist.get_rank() if self.dist else 0
        self.world = self.dist.get_world_size() if self.dist else 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return tensor
        tensor = tensor.detach().clone()
        self.dist.all_reduce(tensor)
        return tensor

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's tensor (same shape on each), concatenated in rank order along dim 0."""
        if self.world == 1:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        self.dist.all_gather(parts, tensor.detach().contiguous())
        return torch.cat(parts)

    def gather_objects(self, obj) -> list:
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        self.dist.all_gather_object(out, obj)
        return out

    def sum_gradients(self, params: list) -> None:
        """Sum the gradients over the processes (one flat all-reduce; a missing gradient counts as 0)."""
        if self.world == 1:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        self.dist.all_reduce(flat)
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
            offset += p.numel()

    def broadcast(self, params: list) -> None:
        """Start every process from the main process's weights."""
        if self.world == 1:
            return
        for p in params:
            self.dist.broadcast(p.data, 0)

    def barrier(self) -> None:
        if self.world > 1:
            self.dist.barrier()


def minibatches(total: int, count: int, seed: int, local: tuple[int, int], device) -> list[tuple]:
    """`count` mini-batches over the step's `total` samples (all processes together), in an order seeded by
    `seed`; for each, (this process's indices into its own samples, the mini-batch's global indices).
    `local` = (first, end) of this process's samples in the step."""
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed)).to(device)
    size = max(1, math.ceil(total / max(count, 1)))
    first, end = local
    out = []
    for i in range(0, total, size):
        chunk = order[i:i + size]
        mine = chunk[(chunk >= first) & (chunk < end)]
        out.append((mine - first, chunk))
    return out
