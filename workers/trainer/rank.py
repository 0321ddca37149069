"""One rank of a session's process group, as torchrun starts it: `python -m workers.trainer.rank FOLDER`.

Reads its inputs from the folder launch.py wrote, joins the group (NCCL on GPUs, gloo on the CPU), trains its
share (train.py with a Group), and, on rank 0 only, writes progress lines, snapshots and the result back.
Rank 0 stops when the session's process asks (a file) or is gone (its pid): every rank stops with it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from workers.trainer.group import from_environment
from workers.trainer.launch import (
    EVENTS,
    FAILURE,
    INPUTS,
    PARENT_PID,
    RESULT,
    SNAPSHOT,
    STOP,
    corpus_from,
)
from workers.trainer.model import ModelConfig
from workers.trainer.train import Progress, Snapshot, TrainConfig, train

TIMEOUT = timedelta(minutes=10)  # a collective that waits this long has lost a peer that torchrun did not see die


def main(folder: Path) -> None:
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=TIMEOUT)
    orphaned: list[bool] = []
    try:
        group = from_environment()
        inputs = torch.load(folder / INPUTS, weights_only=True)
        train_config = TrainConfig(**inputs["train_config"])
        leader = group.leader
        every_s = inputs["checkpoint_every_s"]  # None: the session wants no in-session checkpoints
        try:
            result = train(
                ModelConfig.from_dict(inputs["model_config"]), train_config, corpus_from(inputs["corpus"]),
                resume=inputs["resume"], init_weights=inputs["init_weights"], group=group,
                progress_every=inputs["progress_every"],
                on_progress=_progress_to(folder / EVENTS) if leader else None,
                should_stop=_stop_asked(folder, orphaned) if leader else None,
                on_checkpoint=_snapshot_to(folder / SNAPSHOT) if leader and every_s is not None else None,
                checkpoint_every_s=every_s or 0.0,
            )
        except ValueError as exc:
            if leader:
                (folder / FAILURE).write_text(json.dumps({"type": "ValueError", "message": str(exc)}))
            raise
        if leader and orphaned:  # nobody will read it: the folder holds checkpoint-sized files, free the disk
            shutil.rmtree(folder, ignore_errors=True)
        elif leader:
            _write_whole(folder / RESULT, asdict(result))
        dist.barrier()  # no rank leaves while another may still talk to it
    finally:
        dist.destroy_process_group()
    # Done, and everything is on disk: leave without the interpreter's teardown, where a native thread of the
    # group that is still joinable has aborted a finished rank ("terminate called without an active
    # exception", about one run in six here), which torchrun reports as a failed group.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _progress_to(path: Path) -> Callable[[Progress], None]:
    def on_progress(p: Progress) -> None:
        with open(path, "a") as fh:
            fh.write(json.dumps({"progress": asdict(p)}) + "\n")
    return on_progress


def _stop_asked(folder: Path, orphaned: list[bool]) -> Callable[[], bool]:
    parent = int(os.environ.get(PARENT_PID, "0"))

    def should_stop() -> bool:
        if parent > 0 and not _alive(parent):  # killed past its hard time limit, say: no one is listening
            orphaned.append(True)
            return True
        return (folder / STOP).exists()
    return should_stop


def _snapshot_to(path: Path) -> Callable[[Snapshot], None]:
    def on_checkpoint(snap: Snapshot) -> None:
        try:
            _write_whole(path, {"payload": snap.payload, "losses": snap.losses,
                                "val_loss_before": snap.val_loss_before})
        except OSError as exc:  # a full disk costs the safety net, not the session (as in one process)
            print(f"rank 0: could not hand over the in-session checkpoint: {exc}", file=sys.stderr, flush=True)
            path.with_suffix(".part").unlink(missing_ok=True)
    return on_checkpoint


def _write_whole(path: Path, obj: object) -> None:
    """Written beside, then renamed: the session's process never reads half a file."""
    tmp = path.with_suffix(".part")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    main(Path(sys.argv[1]))
