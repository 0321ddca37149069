"""Sessions on several processes (torch.distributed, gloo on this CPU, two ranks under torchrun): they follow a
one-process session with the same global batch step for step, their checkpoints resume on any number of
processes, a stop reaches every rank, and a killed rank ends the session with its in-session checkpoint kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from tests.repos import git, set_ci_profile
from tests.test_local_mode import RUN_DIR, retrain, summary_at
from tests.test_session_redelivery import session
from workers import demo
from workers.session.session import Controls, TrainingProcessLost
from workers.session.training_options import TrainingOptions
from workers.trainer import launch
from workers.trainer.data import build_corpus
from workers.trainer.group import Group
from workers.trainer.launch import PARENT_PID, RankLost, train_in_group
from workers.trainer.model import ModelConfig
from workers.trainer.train import Progress, Snapshot, TrainConfig, _micro_batches, train

MODEL = ModelConfig(n_layer=2, n_head=2, n_embd=64, block_size=64)
# Two ranks sum their shares' gradients in another order than one process sums the batch's: float32 noise.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def corpus():
    return build_corpus({p: t.encode() for p, t in demo.corpus().items()}, block_size=MODEL.block_size)


def config(**overrides: object) -> TrainConfig:
    return TrainConfig(**{"max_iters": 20, "batch_size": 5, "seed": 11, "warmup_iters": 4, "average_horizon": 5,
                          **overrides})


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b, strict=True)) < TOLERANCE


def rank_processes(parents: set[int] | None = None) -> dict[int, int]:
    """{rank: pid} of the training ranks running now for sessions held by `parents` (default: this process),
    so that two test runs on one machine never see, or kill, each other's ranks."""
    parents = {os.getpid()} if parents is None else parents
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"workers.trainer.rank" not in (entry / "cmdline").read_bytes():
                continue
            env = dict(v.split(b"=", 1) for v in (entry / "environ").read_bytes().split(b"\0") if b"=" in v)
        except OSError:
            continue
        if b"RANK" in env and int(env.get(PARENT_PID.encode(), b"0")) in parents:
            found[int(env[b"RANK"])] = int(entry.name)
    return found


def test_a_batch_is_shared_out_whole_and_cut_into_forward_passes() -> None:
    assert [Group(r, 2).share(5) for r in range(2)] == [(0, 3), (3, 5)]
    assert [Group(r, 3).share(9) for r in range(3)] == [(0, 3), (3, 6), (6, 9)]
    with pytest.raises(ValueError, match="at least the number of processes"):
        Group(1, 4).share(3)
    assert _micro_batches((3, 8), 2) == [(0, 2), (2, 4), (4, 5)]
    assert _micro_batches((0, 4), None) == [(0, 4)]


def test_two_processes_follow_one_process_with_the_same_global_batch(corpus) -> None:
    """Uneven shares (3 + 2 rows) and gradient accumulation (forward passes of 2 rows) included."""
    one = train(MODEL, config(), corpus)
    reports: list[Progress] = []
    two = train_in_group(2, MODEL, config(micro_batch_size=2), corpus, on_progress=reports.append,
                         progress_every=5)
    assert two.world_size == 2 and one.world_size == 1
    assert close(one.losses, two.losses), (one.losses[:4], two.losses[:4])
    assert [p.iteration for p in reports] == [5, 10, 15, 20]
    assert abs(one.val_loss_after - two.val_loss_after) < TOLERANCE
    assert abs(one.val_loss_before - two.val_loss_before) < 1e-9  # the same weights, windows shared out
    for name, weights in one.state["model"].items():
        assert torch.allclose(weights, two.state["model"][name], atol=1e-4), name
    # Training moved the weights well beyond that tolerance, so the comparison can fail.
    assert one.losses[0] - one.losses[-1] > 0.5


def test_checkpoints_resume_on_another_number_of_processes(corpus) -> None:
    """One uninterrupted process, against: two processes whose in-session checkpoint goes on in one; one
    process whose checkpoint at 10 goes on in two."""
    whole = train(MODEL, config(), corpus)
    snapshots: list[Snapshot] = []
    two = train_in_group(2, MODEL, config(), corpus, on_checkpoint=snapshots.append, checkpoint_every_s=0,
                         progress_every=5)
    # Rank 0 snapshots at 5, 10 and 15; the session's process takes the newest whenever it looks.
    snap = snapshots[0]
    at = snap.payload["iteration"]
    assert at in (5, 10, 15) and len(snap.losses) == at
    two_then_one = train(MODEL, config(max_iters=20 - at), corpus, resume=snap.payload)
    first = train(MODEL, config(max_iters=10), corpus)
    one_then_two = train_in_group(2, MODEL, config(max_iters=10), corpus, resume=first.state)

    assert close(two.losses, whole.losses)
    assert (two_then_one.start_iteration, two_then_one.end_iteration) == (at, 20)
    assert close(snap.losses + two_then_one.losses, whole.losses)
    assert close(first.losses + one_then_two.losses, whole.losses)
    assert abs(one_then_two.val_loss_after - whole.val_loss_after) < TOLERANCE
    assert abs(two_then_one.val_loss_after - whole.val_loss_after) < TOLERANCE


def test_a_stop_reaches_every_rank_at_the_same_iteration(corpus) -> None:
    seen: list[Progress] = []
    result = train_in_group(2, MODEL, config(max_iters=100_000), corpus, on_progress=seen.append, progress_every=5,
                            should_stop=lambda: bool(seen))
    assert result.stopped_early and result.end_iteration == len(result.losses) < 100_000
    assert result.end_iteration % 5 == 0  # at a progress boundary, all ranks together (else a collective hangs)
    assert rank_processes() == {}


def rank_environ(pid: int) -> dict[bytes, bytes]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(v.split(b"=", 1) for v in raw.split(b"\0") if b"=" in v)


def test_a_killed_rank_ends_the_group_and_its_last_snapshot_resumes(corpus, monkeypatch) -> None:
    monkeypatch.setenv("RETRAIN_WEBHOOK_SECRET", "not-for-ranks")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-ranks-either")
    snapshots: list[Snapshot] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            train_in_group(2, MODEL, config(max_iters=100_000), corpus, on_checkpoint=snapshots.append,
                           checkpoint_every_s=0, progress_every=5)
        except BaseException as exc:  # what the thread ended with is the test's subject
            failed.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 120
    while not snapshots and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    ranks = rank_processes()
    assert snapshots and set(ranks) == {0, 1}, (ranks, failed)
    environ = rank_environ(ranks[1])
    assert b"not-for-ranks" not in b"".join(environ.values()) and b"PATH" in environ  # the App's secrets stay out
    os.kill(ranks[1], signal.SIGKILL)
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert len(failed) == 1 and isinstance(failed[0], RankLost), failed
    lost = failed[0]
    assert lost.snapshot_iteration is not None and lost.snapshot_iteration >= snapshots[0].payload["iteration"]
    assert "ended unexpectedly" in str(lost) and f"iteration {lost.snapshot_iteration} is kept" in str(lost)
    assert rank_processes() == {}, "rank 0 and torchrun are gone too"
    last = snapshots[-1]
    resumed = train(MODEL, config(max_iters=5), corpus, resume=last.payload)
    assert resumed.start_iteration == last.payload["iteration"]


ORPHAN = """
import sys
from workers import demo
from workers.trainer.data import build_corpus
from workers.trainer.launch import train_in_group
from workers.trainer.model import ModelConfig
from workers.trainer.train import TrainConfig
corpus = build_corpus({p: t.encode() for p, t in demo.corpus().items()}, block_size=64)
train_in_group(2, ModelConfig(n_layer=2, n_head=2, n_embd=64, block_size=64),
               TrainConfig(max_iters=10_000_000, batch_size=4), corpus, progress_every=5)
"""


def test_ranks_whose_session_process_is_killed_stop_by_themselves(tmp_path: Path) -> None:
    """SIGKILL on the session's process (a pool process past its hard time limit) runs no cleanup: its ranks,
    in a process group of their own, must not train on, holding GPUs nobody reads, for ever."""
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    parent = subprocess.Popen([sys.executable, str(script)], cwd=Path(__file__).resolve().parents[1],
                              env={**os.environ, "TMPDIR": str(scratch)})
    mine = {parent.pid}
    try:
        deadline = time.monotonic() + 120
        while set(rank_processes(mine)) != {0, 1} and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.2)
        assert set(rank_processes(mine)) == {0, 1}, "the group never started"
        time.sleep(2)  # training, past the first progress boundaries
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 60
        while rank_processes(mine) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rank_processes(mine) == {}, "ranks trained on without their session's process"
        # and rank 0 took the ranks' folder (inputs, checkpoint-sized) with it
        deadline = time.monotonic() + 30
        while list(scratch.glob("retrain-group-*")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not list(scratch.glob("retrain-group-*")), list(scratch.iterdir())
    finally:
        parent.kill()
        for pid in rank_processes(mine).values():
            os.kill(pid, signal.SIGKILL)


def test_a_group_with_a_hung_rank_is_ended_after_a_stop_goes_unanswered(corpus, monkeypatch) -> None:
    """SIGSTOP on a rank: the others wait in a collective; a stop request cannot reach a progress boundary.
    The session's process ends the group after the grace (shortened here), keeping the last snapshot."""
    monkeypatch.setattr(launch, "STOP_GRACE_S", 3.0)
    stopped: list[int] = []
    snapshots: list[Snapshot] = []

    def hang_one_then_stop() -> bool:
        if not stopped and snapshots and (ranks := rank_processes()) and set(ranks) == {0, 1}:
            os.kill(ranks[1], signal.SIGSTOP)
            stopped.append(ranks[1])
            return False
        return bool(stopped)

    began = time.monotonic()
    with pytest.raises(RankLost, match="stopped answering") as lost:
        train_in_group(2, MODEL, config(max_iters=100_000), corpus, should_stop=hang_one_then_stop, progress_every=5,
                       on_checkpoint=snapshots.append, checkpoint_every_s=0)
    assert stopped and time.monotonic() - began < 90
    assert lost.value.snapshot_iteration is not None
    deadline = time.monotonic() + 30
    while rank_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rank_processes() == {}, "the stopped rank was ended too"


def test_a_drain_while_a_group_finishes_commits_the_whole_session(github, settings) -> None:
    """The review's sequence: a drain asked once the last progress report is in, while rank 0 evaluates and
    hands back its result. The session finished every iteration: it commits, it is not paused (a pause saved
    the whole result as an in-session checkpoint, and the next delivery then asked for 0 iterations). Timing
    decides whether the drain lands before the group ends (5 runs in 7 before the fix)."""
    emu, _ = github
    set_ci_profile(emu)
    seen: list[Progress] = []
    two = Controls(on_progress=seen.append, should_pause=lambda: any(p.session_iteration >= 200 for p in seen),
                   training=TrainingOptions(nproc=2))
    result = session(settings, "e" * 32, controls=two, max_iters=200)
    assert (result.facts.end_iteration, result.stopped) == (200, None)
    assert [c for c in emu.git_log(REPO) if c["message"].startswith("retrain(")]


def test_a_session_whose_rank_is_killed_goes_on_from_its_in_session_checkpoint_in_one_process(
    github, settings
) -> None:
    """The session's own path (GitHub emulator, store on disk): a rank killed part way → the session is handed
    back (TrainingProcessLost, which the train task sends again), nothing is committed, the in-session
    checkpoint is kept; sent again to a one-process worker, it goes on from there and commits 0 → 600."""
    emu, _ = github
    set_ci_profile(emu, checkpoint_every_s=1e-9)  # an in-session checkpoint at every progress report
    killed: list[int] = []

    def kill_a_rank(p: Progress) -> None:
        if not killed and set(ranks := rank_processes()) == {0, 1}:
            os.kill(ranks[1], signal.SIGKILL)
            killed.append(p.session_iteration)

    two = Controls(on_progress=kill_a_rank, training=TrainingOptions(nproc=2))
    with pytest.raises(TrainingProcessLost) as lost:
        session(settings, "d" * 32, controls=two, max_iters=600)
    assert killed and 10 <= lost.value.iteration < 600
    inflight = Path(settings.store_url.removeprefix("file://")) / REPO / "nanecho-cached-ci/inflight" / f"{'d' * 32}.pt"
    assert inflight.is_file()
    assert not [c for c in emu.git_log(REPO) if c["message"].startswith("retrain(")]
    assert rank_processes() == {}

    again = session(settings, "d" * 32, controls=Controls(), max_iters=600)
    assert (again.facts.start_iteration, again.facts.end_iteration) == (0, 600)
    assert again.facts.world_size == 1
    assert any(f"in-session checkpoint at iteration {lost.value.iteration}" in n for n in again.facts.notes)
    commits = [c for c in emu.git_log(REPO) if c["message"].startswith("retrain(")]
    assert len(commits) == 1


def test_retrain_train_on_two_processes_commits_and_one_process_resumes(tmp_path: Path) -> None:
    """The README's `retrain train --nproc-per-node 2` on the demo repository, as a user runs it."""
    repo = demo.create_demo_repo(tmp_path / "repo")
    store = f"file://{tmp_path / 'store'}"
    first = retrain("train", "--repo", str(repo), "--max-iters", "20", "--nproc-per-node", "2", "--store", store,
                    home=tmp_path)
    assert "2 processes" in first.stdout, first.stdout
    retrain("train", "--repo", str(repo), "--max-iters", "10", "--store", store, home=tmp_path)
    s1, s2 = summary_at(repo, "HEAD~1")["session"], summary_at(repo, "HEAD")["session"]
    assert (s1["world_size"], s2["world_size"]) == (2, 1)
    assert s2["resumed_from"] == s1["checkpoint_id"] and s2["start_iteration"] == 20
    assert abs(s2["val_loss_before"] - s1["val_loss_after"]) < 1e-6  # the same weights, read in one process
    metadata = json.loads(git(repo, "show", f"HEAD:{RUN_DIR}/cache/metadata.json"))
    assert metadata[s1["checkpoint_id"]]["metrics"]["world_size"] == 2


def test_a_group_refuses_a_batch_smaller_than_itself_before_starting(corpus) -> None:
    with pytest.raises(ValueError, match="cannot be shared by 4 processes"):
        train_in_group(4, MODEL, config(batch_size=3), corpus)
    assert rank_processes() == {}
