"""Where training runs, and the CUDA-only speed settings (bf16 autocast, TF32).

Kept apart from the loop so it reads the same on CPU and GPU; the CPU path stays plain fp32.
"""

from __future__ import annotations

import contextlib
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


# Dense bf16 peaks (FLOP/s) by GPU name, for model FLOPs utilisation; an unknown GPU reports no MFU.
BF16_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_FLOPS.items() if key in name), None)
