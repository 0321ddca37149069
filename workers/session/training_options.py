"""How this worker trains, whatever a repository says: processes per session, forward-pass size, compilation
and the batch a GPU gets by default are the hardware's business, set by whoever runs the worker (RETRAIN_*).
Pure: the device is asked by the caller."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from app.config.repo_config import Profile
from app.config.settings import GPU_BATCH_SIZE, Settings
from workers.trainer.train import TrainConfig


@dataclass(frozen=True)
class TrainingOptions:
    nproc: int = 1  # processes per session, one per GPU (workers/trainer/launch.py)
    micro_batch_size: int | None = None  # sequences per forward pass per process; the rest is accumulated
    compile: Literal["auto", "on", "off"] = "auto"  # auto: on CUDA only, where it pays for its start
    gpu_batch_size: int = GPU_BATCH_SIZE
    max_batch_size: int | None = None  # the operator's limits (app/config/limits.py): a default never passes them
    max_tokens_per_iter: int | None = None
    group_dir: str | None = None  # where a group's ranks get their inputs (checkpoint-sized); None: the temp folder

    def apply(self, base: TrainConfig, profile: Profile, block_size: int, *, cuda: bool) -> TrainConfig:
        """The session's TrainConfig on this worker. A profile that sets `batch_size` keeps it; one that does
        not gets a GPU-sized batch on a GPU, which `micro_batch_size` keeps within a small card's memory."""
        batch = base.batch_size
        if cuda and "batch_size" not in profile.model_fields_set:
            batch = self.gpu_batch_size
            if self.max_batch_size is not None:
                batch = min(batch, self.max_batch_size)
            if self.max_tokens_per_iter is not None:
                batch = min(batch, max(1, self.max_tokens_per_iter // block_size))
        compiled = self.compile == "on" or (self.compile == "auto" and cuda)
        return replace(base, batch_size=batch, micro_batch_size=self.micro_batch_size, compile=compiled)


    @classmethod
    def from_settings(cls, settings: Settings) -> TrainingOptions:
        return cls(
            nproc=settings.nproc_per_node, micro_batch_size=settings.micro_batch_size, compile=settings.compile,
            gpu_batch_size=settings.gpu_batch_size, max_batch_size=settings.max_batch_size,
            max_tokens_per_iter=settings.max_tokens_per_iter,
            group_dir=str(settings.group_dir) if settings.group_dir is not None else None,
        )


DEFAULT_TRAINING = TrainingOptions()
