"""What the worker decides about training, whatever a repository says: batch on a GPU, compilation, processes;
and the GPUs whose peak MFU is measured against."""

from __future__ import annotations

import pytest
import torch

from app.config.repo_config import Profile
from app.config.settings import Settings
from workers.session.training_options import TrainingOptions
from workers.trainer.device import PEAK_FLOPS_ENV, peak_flops, peak_for_name
from workers.trainer.train import TrainConfig

BASE = TrainConfig(max_iters=10, batch_size=8)


def test_a_profile_without_a_batch_gets_a_gpu_sized_one_on_a_gpu_only() -> None:
    unset, chosen = Profile(), Profile(batch_size=12)
    options = TrainingOptions()
    assert options.apply(BASE, unset, 256, cuda=True).batch_size == 64
    assert options.apply(BASE, unset, 256, cuda=False).batch_size == 8
    assert options.apply(replace_batch(12), chosen, 256, cuda=True).batch_size == 12


def test_the_gpu_default_never_passes_the_operators_limits() -> None:
    options = TrainingOptions(max_batch_size=32, max_tokens_per_iter=4096)
    assert options.apply(BASE, Profile(), 256, cuda=True).batch_size == 16  # 4096 tokens / 256
    assert TrainingOptions(max_batch_size=32).apply(BASE, Profile(), 256, cuda=True).batch_size == 32


def test_compilation_is_on_for_cuda_by_default_and_the_batch_is_never_raised_for_processes() -> None:
    assert TrainingOptions().apply(BASE, Profile(), 256, cuda=True).compile
    assert not TrainingOptions().apply(BASE, Profile(), 256, cuda=False).compile
    assert TrainingOptions(compile="on").apply(BASE, Profile(), 256, cuda=False).compile
    assert not TrainingOptions(compile="off").apply(BASE, Profile(), 256, cuda=True).compile
    assert TrainingOptions(nproc=16).apply(BASE, Profile(batch_size=8), 256, cuda=False).batch_size == 8
    assert TrainingOptions(micro_batch_size=2).apply(BASE, Profile(), 256, cuda=False).micro_batch_size == 2


def test_the_worker_settings_reach_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"RETRAIN_NPROC_PER_NODE": "4", "RETRAIN_MICRO_BATCH_SIZE": "3", "RETRAIN_COMPILE": "off",
                        "RETRAIN_GPU_BATCH_SIZE": "128", "RETRAIN_MAX_BATCH_SIZE": "100"}.items():
        monkeypatch.setenv(name, value)
    options = TrainingOptions.from_settings(Settings())
    assert (options.nproc, options.micro_batch_size, options.compile, options.gpu_batch_size,
            options.max_batch_size) == (4, 3, "off", 128, 100)
    monkeypatch.setenv("RETRAIN_COMPILE", "sometimes")
    with pytest.raises(ValueError, match="compile"):
        Settings()


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A100 80GB PCIe", 312e12),
    ("NVIDIA L4", 121e12), ("NVIDIA L40S", 362e12), ("NVIDIA A10G", 70e12), ("Tesla T4", None),
])
def test_gpus_are_told_apart_by_name_for_their_bf16_peak(name: str, peak: float | None) -> None:
    assert peak_for_name(name) == peak


def test_no_peak_on_the_cpu_even_when_one_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PEAK_FLOPS_ENV, "1e15")
    assert peak_flops(torch.device("cpu")) is None


def replace_batch(batch: int) -> TrainConfig:
    return TrainConfig(max_iters=10, batch_size=batch)
