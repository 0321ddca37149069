"""Where training runs, and the CUDA-only speed settings (bf16 autocast, TF32).

Kept apart from the loop so it reads the same on CPU and GPU; the CPU path stays plain fp32.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch


def resolve_device(name: str) -> torch.device:
    """Pick CUDA for "auto" when present; an explicit "cuda" without a GPU is an error, not a CPU run."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"train config asks for device {name!r} but CUDA is not available")
        # An explicit index: the RNG state and fork_rng in the trainer name one device.
        return torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on GPUs that have it (no loss scaling needed); plain fp32 elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def cuda_speedups(device: torch.device) -> Iterator[None]:
    """TF32 matmuls on CUDA for this call only; the flags are process-wide, so put them back."""
    if device.type != "cuda":
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


# Dense bf16 tensor-core peaks (FLOP/s, no sparsity) from NVIDIA's data sheets, for model FLOPs utilisation.
# Matched in this order against the CUDA device name (the more specific names first): "NVIDIA H100 PCIe",
# "NVIDIA H100 NVL", "NVIDIA H100 80GB HBM3" (SXM), "NVIDIA H200", "NVIDIA A100-SXM4-80GB", "NVIDIA L4"...
BF16_PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12),
    ("B200", 2250e12), ("A100", 312e12), ("A10G", 70e12), ("A10", 125e12), ("L40S", 362e12), ("L40", 181e12),
    ("L4", 121e12),
)
PEAK_FLOPS_ENV = "RETRAIN_PEAK_FLOPS"  # an operator's figure for a GPU not named here (or a clocked-down one)


def peak_for_name(name: str) -> float | None:
    """The dense bf16 peak of a GPU by its CUDA name; None when it is not one we know."""
    return next((peak for key, peak in BF16_PEAK_FLOPS if key in name), None)


def peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak: RETRAIN_PEAK_FLOPS when set, else by name; None on the CPU or when unknown."""
    if device.type != "cuda":
        return None
    told = os.environ.get(PEAK_FLOPS_ENV)
    if told:
        try:
            return float(told)
        except ValueError:
            return None
    return peak_for_name(torch.cuda.get_device_name(device))
