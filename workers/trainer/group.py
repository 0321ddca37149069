"""The process group a session trains in, as the loop sees it: one process, or one rank of several under
torch.distributed (launched torchrun-style by launch.py, one process per GPU).

Every rank draws the same global batch from the same sampler and trains on its own share of it, so the
gradients DDP averages are the gradients of the whole batch, the losses summed over ranks are the batch's
loss, and the sampler's state is the same on every rank. That is why a checkpoint does not depend on the
number of processes that wrote it: one written by two ranks resumes in one process and the other way round,
and a two-rank session follows a one-process session with the same global batch step for step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} is outside a group of {self.world}")

    @property
    def leader(self) -> bool:
        """Rank 0 alone reports, snapshots and hands back the result; the others train and evaluate."""
        return self.rank == 0

    def share(self, batch: int) -> tuple[int, int]:
        """This rank's rows [lo, hi) of a global batch: contiguous, sizes differing by one at most."""
        if batch < self.world:
            raise ValueError(f"a batch of {batch} cannot be shared by {self.world} processes; batch_size must be "
                             f"at least the number of processes")
        base, extra = divmod(batch, self.world)
        lo = self.rank * base + min(self.rank, extra)
        return lo, lo + base + (1 if self.rank < extra else 0)

    def sum_(self, tensor: Tensor) -> Tensor:
        """Sum over ranks, in place (a no-op alone). Asynchronous on the GPU: no host sync."""
        if self.world > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def decide(self, flags: list[bool], device: torch.device) -> list[bool]:
        """Rank 0's answers, on every rank: every rank stops, or snapshots, at the same iteration."""
        if self.world == 1:
            return flags
        told = torch.tensor([float(f) for f in flags], device=device)
        dist.broadcast(told, src=0)
        return [bool(v) for v in told.tolist()]

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """DDP over the group: gradients averaged across ranks in buckets, overlapped with the backward pass."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)


SOLO = Group()


def from_environment() -> Group:
    """The group torchrun made (RANK and WORLD_SIZE), once the default process group is initialised."""
    if not dist.is_initialized():
        return SOLO
    return Group(rank=dist.get_rank(), world=dist.get_world_size())
