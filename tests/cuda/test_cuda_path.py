"""The CUDA path, which only a GPU machine can run (`scripts/gpu-check`; elsewhere these tests are not
collected, and the suite's header says so). They import only the trainer and torch, so they run with
`--noconftest` on a machine that has nothing of the App's stack."""

from __future__ import annotations

import math

import pytest
import torch

from workers import demo
from workers.trainer.data import build_corpus
from workers.trainer.device import peak_flops
from workers.trainer.launch import train_in_group
from workers.trainer.model import ModelConfig
from workers.trainer.train import TrainConfig, evaluate, train

pytestmark = pytest.mark.cuda
MODEL = ModelConfig(n_layer=2, n_head=2, n_embd=128, block_size=128)


@pytest.fixture(scope="module")
def corpus():
    return build_corpus({p: t.encode() for p, t in demo.corpus().items()}, block_size=MODEL.block_size)


def config(**overrides: object) -> TrainConfig:
    return TrainConfig(**{"max_iters": 60, "batch_size": 16, "seed": 3, "warmup_iters": 5, "average_horizon": 10,
                          "device": "cuda", **overrides})


def test_a_session_trains_on_the_gpu_in_bf16_and_reports_mfu(corpus) -> None:
    result = train(MODEL, config(), corpus)
    assert result.device.startswith("cuda") and all(map(math.isfinite, result.losses))
    assert result.losses[-1] < result.losses[0] - 0.5
    assert result.val_loss_after < result.val_loss_before
    if peak_flops(torch.device("cuda")) is not None:
        assert result.mfu is not None and 0 < result.mfu < 1
    assert all(t.device.type == "cpu" for t in result.state["model"].values())  # payloads are device-free


def test_compiled_training_follows_eager_training(corpus) -> None:
    eager = train(MODEL, config(compile=False), corpus)
    compiled = train(MODEL, config(compile=True), corpus)
    # bf16 and other kernels: close, not equal
    assert max(abs(a - b) for a, b in zip(eager.losses, compiled.losses, strict=True)) < 0.1
    assert abs(eager.val_loss_after - compiled.val_loss_after) < 0.05


def test_micro_batches_accumulate_to_the_same_step(corpus) -> None:
    whole = train(MODEL, config(), corpus)
    pieces = train(MODEL, config(micro_batch_size=4), corpus)
    assert max(abs(a - b) for a, b in zip(whole.losses, pieces.losses, strict=True)) < 0.05


def test_a_gpu_checkpoint_goes_on_on_the_cpu_and_back(corpus) -> None:
    first = train(MODEL, config(max_iters=20), corpus)
    on_cpu = train(MODEL, config(max_iters=5, device="cpu"), corpus, resume=first.state)
    back = train(MODEL, config(max_iters=5), corpus, resume=on_cpu.state)
    assert (on_cpu.start_iteration, back.end_iteration) == (20, 30)
    cpu_eval = evaluate(MODEL, first.state, corpus, device="cpu")
    assert abs(cpu_eval - first.val_loss_after) < 0.05  # bf16 on the GPU, fp32 on the CPU


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs one GPU per rank; this machine has one")
def test_two_ranks_on_two_gpus_follow_one(corpus) -> None:
    one = train(MODEL, config(), corpus)
    two = train_in_group(2, MODEL, config(), corpus)
    assert two.world_size == 2
    assert max(abs(a - b) for a, b in zip(one.losses, two.losses, strict=True)) < 0.1
