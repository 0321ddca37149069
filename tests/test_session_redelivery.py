"""A session delivered more than once (its worker died, Celery redelivered it) against the emulator and a
real Redis lease: it resumes its in-session checkpoint, commits exactly once, and never trains twice."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from app.config.settings import Settings
from app.github.client import installation_client
from tests.conftest import INSTALLATION_ID, REPO
from tests.repos import set_ci_profile
from workers.coordination.run_lock import LeaseLost, RunBusy, RunLocks
from workers.session.repos import GitHubRepository
from workers.session.session import AlreadyCommitted, Controls, SessionRequest, SessionResult, run_session
from workers.session.store import CheckpointStore
from workers.trainer.train import Progress

RUN_DIR = ".training-progress/nanecho-cached-ci"


class WorkerDied(BaseException):
    """Stands in for SIGKILL inside one process: nothing after the raise runs, no `except Exception` sees it."""


def session(settings: Settings, session_id: str, *, max_iters: int = 60, controls: Controls | None = None,
            ) -> SessionResult:
    async def go() -> SessionResult:
        async with installation_client(settings, INSTALLATION_ID) as gh:
            request = SessionRequest(session_id=session_id, profile="ci", max_iters=max_iters)
            return await run_session(GitHubRepository(gh, REPO), CheckpointStore(settings.store_url), request,
                                     store_prefix=REPO, controls=controls)

    return asyncio.run(go())


def die_at(iteration: int):
    def on_progress(p: Progress) -> None:
        if p.session_iteration >= iteration:
            raise WorkerDied
    return on_progress


def progress_commits(emu) -> list[dict]:
    return [c for c in emu.git_log(REPO) if c["message"].startswith("retrain(")]


def test_a_killed_session_resumes_its_in_session_checkpoint_and_matches_an_uninterrupted_one(
    github, settings, tmp_path: Path
) -> None:
    emu, _ = github
    set_ci_profile(emu, checkpoint_every_s=1e-9)  # a checkpoint at every progress report (every 10 iterations)
    with pytest.raises(WorkerDied):
        session(settings, "a" * 32, controls=Controls(on_progress=die_at(35)))
    inflight = Path(settings.store_url.removeprefix("file://")) / REPO / "nanecho-cached-ci/inflight" / f"{'a' * 32}.pt"
    assert inflight.is_file() and progress_commits(emu) == []

    resumed = session(settings, "a" * 32)
    assert (resumed.facts.start_iteration, resumed.facts.end_iteration) == (0, 60)
    assert any("resumed this session's own in-session checkpoint at iteration 30" in n for n in resumed.facts.notes)
    assert not inflight.exists(), "the in-session checkpoint is dropped once the commit has landed"

    # The same session (so the same stream) without an interruption, with a store and registry of its own:
    # the very same model.
    uninterrupted_settings = settings.model_copy(update={"store_url": f"file://{tmp_path / 'other-store'}"})
    emu.commit_files(REPO, {f"{RUN_DIR}/cache/metadata.json": None, f"{RUN_DIR}/history.jsonl": None},
                     message="forget the registry")
    clean = session(uninterrupted_settings, "a" * 32)
    assert clean.facts.val_loss_after == resumed.facts.val_loss_after
    assert clean.facts.loss_curve == resumed.facts.loss_curve


def test_a_session_redelivered_after_its_commit_trains_nothing(github, settings) -> None:
    emu, _ = github
    first = session(settings, "c" * 32, max_iters=10)
    with pytest.raises(AlreadyCommitted) as again:
        session(settings, "c" * 32, max_iters=10)
    assert again.value.checkpoint_id == first.checkpoint_id
    assert len(progress_commits(emu)) == 1


class DiesBeforeCommitting(GitHubRepository):
    async def commit(self, *args, **kwargs):
        raise WorkerDied


def test_a_session_killed_between_storing_and_committing_commits_its_stored_result(github, settings) -> None:
    emu, _ = github

    async def first_delivery() -> None:
        async with installation_client(settings, INSTALLATION_ID) as gh:
            await run_session(DiesBeforeCommitting(gh, REPO), CheckpointStore(settings.store_url),
                              SessionRequest(session_id="d" * 32, profile="ci", max_iters=10), store_prefix=REPO)

    with pytest.raises(WorkerDied):
        asyncio.run(first_delivery())
    store_root = Path(settings.store_url.removeprefix("file://"))
    stored_before = sorted(store_root.rglob("*.pt"))
    result = session(settings, "d" * 32, max_iters=10)
    assert any("an earlier delivery of this session trained it" in n for n in result.facts.notes)
    assert sorted(store_root.rglob("*.pt")) == stored_before, "no second checkpoint was trained"
    [commit] = progress_commits(emu)
    metadata = json.loads(emu.read_file(REPO, f"{RUN_DIR}/cache/metadata.json", ref=commit["oid"]))
    assert list(metadata) == [result.checkpoint_id]
    assert list(store_root.rglob("*.json")) == [], "records are dropped once the commit holds them"


def test_the_soft_time_limit_stops_training_and_commits_what_it_has(github, settings) -> None:
    emu, _ = github
    set_ci_profile(emu, time_limit_s=1.5)
    result = session(settings, "e" * 32, max_iters=100_000)
    assert 0 < result.facts.iterations < 100_000
    assert result.stopped == "time limit"
    assert any("time limit" in n for n in result.facts.notes)
    assert len(progress_commits(emu)) == 1


def test_a_second_session_waits_for_the_run_and_a_fenced_out_one_commits_nothing(github, settings, clean_redis
                                                                                 ) -> None:
    emu, _ = github
    locks = RunLocks(clean_redis, ttl_s=30)
    held = locks.acquire(REPO, "nanecho-cached-ci", "someone-else")
    with pytest.raises(RunBusy):
        session(settings, "f" * 32, controls=Controls(hold_run=lambda run: locks.acquire(REPO, run, "f" * 32)))
    held.release()

    def taken_over(p: Progress) -> None:  # another session takes the run while this one trains
        clean_redis.set("retrain:lock:octo/demo:nanecho-cached-ci", "999:intruder")

    with pytest.raises(LeaseLost):
        session(settings, "f" * 32, max_iters=20, controls=Controls(
            on_progress=taken_over, hold_run=lambda run: locks.acquire(REPO, run, "f" * 32)))
    assert progress_commits(emu) == []


def test_a_redelivered_session_has_only_the_rest_of_its_time_limit(github, settings) -> None:
    """Interruptions do not extend a session: the clock counts what earlier deliveries spent."""
    emu, _ = github
    set_ci_profile(emu, time_limit_s=6.0, checkpoint_every_s=1e-9)

    def die_after_2s(p: Progress) -> None:
        if p.elapsed_s > 2.0:
            raise WorkerDied

    with pytest.raises(WorkerDied):
        session(settings, "g" * 32, max_iters=100_000, controls=Controls(on_progress=die_after_2s))
    trained_for: list[float] = []
    resumed = session(settings, "g" * 32, max_iters=100_000,
                      controls=Controls(on_progress=lambda p: trained_for.append(p.elapsed_s)))
    assert any("in-session checkpoint at iteration" in n for n in resumed.facts.notes), resumed.facts.notes
    assert resumed.stopped == "time limit"
    # At most 6 - 2 s are left (less what reading and evaluating took, twice); a clock that restarted would
    # have allowed about 6 s. Seconds, not iterations: a loaded machine changes the pace, not the clock.
    assert max(trained_for, default=0.0) < 4.5, f"trained {max(trained_for):.1f} s after the redelivery"
