"""A session on several processes: torchrun (`torch.distributed.run`, the engine PyTorch ships) starts one
rank per GPU (`workers/trainer/rank.py`), and this process, the one that holds the session, relays.

The session's process stays out of the group on purpose: it reads the config, the store and GitHub, and
it must never hang in a collective when a rank dies. It hands the ranks their inputs in a private folder,
turns rank 0's progress lines and snapshots back into the `train` hooks, and tells rank 0 to stop (a file
it looks for at each progress boundary and broadcasts, so every rank stops at the same iteration). When a
rank dies, torchrun ends the others and this raises RankLost; whatever in-session checkpoint was already
handed to `on_checkpoint` is kept by whoever stored it.

The ranks inherit an environment without the App's secrets: they need none.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from workers.trainer.data import Corpus
from workers.trainer.model import ModelConfig
from workers.trainer.tokenizer import from_checkpoint
from workers.trainer.train import OnCheckpoint, Progress, Snapshot, TrainConfig, TrainResult, check_inputs, train

log = logging.getLogger(__name__)

INPUTS, EVENTS, SNAPSHOT, RESULT, STOP, FAILURE = (
    "inputs.pt", "events.jsonl", "snapshot.pt", "result.pt", "stop", "failure.json")
PARENT_PID = "RETRAIN_GROUP_PARENT_PID"
POLL_S = 0.2
# What a rank needs of this process's environment, by name or prefix; everything else (tokens, keys, Redis
# URLs, HF_TOKEN, cloud credentials) stays here.
PASSED_NAMES = frozenset({
    "PATH", "HOME", "USER", "LANG", "TZ", "TMPDIR", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONUNBUFFERED", "VIRTUAL_ENV",
    "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CUDA_HOME", "CUDA_PATH", "CUDA_MODULE_LOADING",
    "CUDA_LAUNCH_BLOCKING", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "OMP_NUM_THREADS",
    "MKL_NUM_THREADS", "XDG_CACHE_HOME",
})
PASSED_PREFIXES = ("LC_", "NCCL_", "TORCH_", "TORCHINDUCTOR_", "GLOO_", "TRITON_")
# A group that has not stopped this long after it was asked (or three of its slowest progress intervals, when
# longer) has a rank that cannot reach a progress boundary: stopped, or stuck in a collective. It is ended.
STOP_GRACE_S = 120.0


class RankLost(RuntimeError):
    """A rank of the session's process group ended without finishing (killed, out of memory, a crash)."""

    def __init__(self, message: str, snapshot_iteration: int | None) -> None:
        super().__init__(message)
        self.snapshot_iteration = snapshot_iteration  # the last in-session checkpoint handed on, if any


def train_in_group(
    nproc: int,
    model_config: ModelConfig,
    train_config: TrainConfig,
    corpus: Corpus,
    *,
    resume: Mapping[str, Any] | None = None,
    init_weights: Mapping[str, Tensor] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    progress_every: int = 10,
    should_stop: Callable[[], bool] | None = None,
    on_checkpoint: OnCheckpoint | None = None,
    checkpoint_every_s: float = 600.0,
    group_dir: str | None = None,
) -> TrainResult:
    """`train` on `nproc` processes (in this one when `nproc` is 1), with the same hooks and the same result.
    `group_dir`: where the ranks' folder goes (checkpoint-sized files); the system's temporary folder by default."""
    hooks: dict[str, Any] = dict(
        resume=resume, init_weights=init_weights, on_progress=on_progress, progress_every=progress_every,
        should_stop=should_stop, on_checkpoint=on_checkpoint, checkpoint_every_s=checkpoint_every_s,
    )
    if nproc <= 1:
        return train(model_config, train_config, corpus, **hooks)
    check_inputs(model_config, train_config, corpus, resume, progress_every, nproc)  # before starting anything
    with tempfile.TemporaryDirectory(prefix="retrain-group-", dir=group_dir) as tmp:
        folder = Path(tmp)
        torch.save({
            "model_config": model_config.to_dict(), "train_config": train_config.to_dict(),
            "corpus": corpus_parts(corpus), "resume": dict(resume) if resume is not None else None,
            "init_weights": dict(init_weights) if init_weights is not None else None,
            "progress_every": progress_every, "checkpoint_every_s": checkpoint_every_s if on_checkpoint else None,
        }, folder / INPUTS)
        return _relay(nproc, folder, on_progress, should_stop, on_checkpoint)


def _relay(
    nproc: int, folder: Path, on_progress: Callable[[Progress], None] | None,
    should_stop: Callable[[], bool] | None, on_checkpoint: OnCheckpoint | None,
) -> TrainResult:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "--max-restarts=0", "-m", "workers.trainer.rank", str(folder)]
    with open(folder / "torchrun.log", "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=rank_environment(nproc),
                                start_new_session=True)  # its own process group: ended as one below
    events = _Lines(folder / EVENTS)
    snapshot_at: int | None = None
    stopping: float | None = None  # when the stop was asked
    hung = False
    last_event, slowest = time.monotonic(), 0.0
    try:
        while True:
            done = proc.poll() is not None
            for event in events.new():
                now = time.monotonic()
                slowest = max(slowest, now - last_event)  # how long a progress interval can take
                last_event = now
                if on_progress is not None:
                    on_progress(Progress(**event["progress"]))
            if (snap := _take(folder / SNAPSHOT)) is not None:
                snapshot_at = int(snap["payload"]["iteration"])
                if on_checkpoint is not None:
                    on_checkpoint(Snapshot(snap["payload"], snap["losses"], snap["val_loss_before"]))
            if stopping is None and not done and should_stop is not None and should_stop():
                stopping = time.monotonic()
                (folder / STOP).touch()
            if done:
                break
            grace = max(STOP_GRACE_S, 3 * slowest)
            if stopping is not None and time.monotonic() - stopping > grace:
                hung = True  # a rank that cannot reach a progress boundary (stopped, stuck in a collective)
                break
            time.sleep(POLL_S)
    finally:
        _end(proc, folder)
    if hung:
        raise _lost(folder, nproc, f"stopped answering (it did not stop within {grace:.0f} s of being asked)",
                    snapshot_at)
    if proc.returncode == 0 and (folder / RESULT).exists():
        saved = torch.load(folder / RESULT, weights_only=True)
        return TrainResult(**{f.name: saved[f.name] for f in fields(TrainResult) if f.name in saved})
    failure = folder / FAILURE
    if failure.exists():  # a rank refused its inputs: the same ValueError one process would have raised
        said = json.loads(failure.read_text())
        if said.get("type") == "ValueError":
            raise ValueError(said["message"])
    raise _lost(folder, nproc, f"ended unexpectedly (torchrun exit code {proc.returncode})", snapshot_at)


def _lost(folder: Path, nproc: int, what: str, snapshot_at: int | None) -> RankLost:
    """Logged with what the ranks said (the operator's to read), and told without it (the session's report)."""
    log.error("a training process of the group %s; its ranks and torchrun said:\n%s", what,
              _what_went_wrong(folder / "torchrun.log"))
    where = f"; the in-session checkpoint at iteration {snapshot_at} is kept" if snapshot_at is not None else ""
    return RankLost(f"a training process of this session's group of {nproc} {what}{where}", snapshot_at)


def _what_went_wrong(path: Path, most: int = 6000) -> str:
    """The ranks' own error lines first (torchrun's summary at the end names only signals), then the end."""
    lines = path.read_text(errors="replace").splitlines()
    told = [line for line in lines if line.startswith("[rank") or "terminate called" in line or "what():" in line]
    return "\n".join([*told[-60:], "...", *lines[-25:]])[-most:]


def rank_environment(nproc: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in PASSED_NAMES or k.startswith(PASSED_PREFIXES)}
    env[PARENT_PID] = str(os.getpid())
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))  # the cores shared out
    root = str(Path(__file__).resolve().parents[2])  # the checkout or site-packages holding `workers`
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def corpus_parts(corpus: Corpus) -> dict[str, Any]:
    """A Corpus as tensors and plain data (what `torch.load(weights_only=True)` reads back)."""
    return {"train": corpus.train, "val": corpus.val, "train_files": list(corpus.train_files),
            "val_files": list(corpus.val_files), "split": corpus.split, "tokenizer": corpus.tokenizer.id,
            "tokenizer_json": corpus.tokenizer.to_json()}


def corpus_from(parts: Mapping[str, Any]) -> Corpus:
    return Corpus(train=parts["train"], val=parts["val"], train_files=tuple(parts["train_files"]),
                  val_files=tuple(parts["val_files"]), split=parts["split"],
                  tokenizer=from_checkpoint(parts["tokenizer"], parts["tokenizer_json"]))


class _Lines:
    """Complete lines appended to a file since the last look (rank 0 writes, this process reads)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


def _take(path: Path) -> dict[str, Any] | None:
    """The file's payload, removed; rank 0 renames each snapshot into place whole, so it is never half-read."""
    if not path.exists():
        return None
    taken = path.with_suffix(f".taken-{time.monotonic_ns()}")
    os.replace(path, taken)
    try:
        return torch.load(taken, weights_only=True)
    finally:
        taken.unlink()


def _end(proc: subprocess.Popen[bytes], folder: Path) -> None:
    """torchrun and its ranks, all of them, whatever happened here. torchrun ends its ranks on SIGTERM; each
    rank runs in a session of its own (torchrun starts them so), so any it could not end (stopped, hung, or
    torchrun itself killed) are found by the folder on their command line and killed."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    mark = f" {folder}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "cmdline").read_bytes().replace(b"\0", b" ").rstrip().endswith(mark):
                    os.kill(int(entry.name), signal.SIGKILL)
