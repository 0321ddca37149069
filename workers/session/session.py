"""One training session, the same pipeline for workers (GitHub) and local mode (a git checkout):

read config and registry at the branch head → choose the best compatible stored checkpoint → train →
store the weights → commit registry and summary in one compare-and-swap commit (re-read and merge when
the branch moved) → drop from the store what retention no longer keeps and no other branch names.

Planning is in plan.py, committing in commit.py; this module runs the session and makes it
safe to deliver twice (its in-session checkpoint, its finished-but-uncommitted result, its commit).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

import torch

from app.config.limits import Limits, profile_problems
from app.config.repo_config import RepoConfig
from app.errors import SessionError
from workers.session import registry as reg
from workers.session.asking import Asking
from workers.session.commit import commit_progress, forget, unshared_drops
from workers.session.history import downsample
from workers.session.inflight import InFlight, SessionSoFar, inflight_key, load_inflight, save_inflight
from workers.session.migration_trial import Trial, try_migration
from workers.session.pending import ENTRY_RECORD, PULLS_FOLDER
from workers.session.plan import (
    SessionPlan,
    SessionRequest,
    locate,
    metadata_path,
    prepare,
)
from workers.session.pretrained import NOWHERE, PretrainedSources
from workers.session.progress import (
    STOPPED_AT_TIME_LIMIT,
    STOPPED_ON_REQUEST,
    SessionFacts,
    checkpoint_id,
    dump_facts,
    load_facts,
    new_entry,
    utcnow,
)
from workers.session.repos import ProgressRepository
from workers.session.snapshot import MAX_TOTAL_BYTES
from workers.session.store import CheckpointStore
from workers.session.training_options import DEFAULT_TRAINING, TrainingOptions
from workers.trainer.baseline import unigram_val_loss
from workers.trainer.launch import RankLost, train_in_group
from workers.trainer.sample import SampleSettings, sample_text
from workers.trainer.train import Progress, Snapshot, TrainConfig, TrainResult, save_state

log = logging.getLogger(__name__)
PAUSED = "paused"
__all__ = ["AlreadyCommitted", "Controls", "SessionPaused", "SessionRequest", "SessionResult", "TimeCap",
           "TrainingProcessLost", "run_session"]


@dataclass(frozen=True)
class SessionResult:
    facts: SessionFacts
    commit_oid: str | None  # None: a pull request's session that commits nowhere
    branch: str | None
    stopped: str | None = None  # see SessionFacts.stopped
    config: RepoConfig | None = None  # the config the session read (publishing asks it, without reading it again)

    @property
    def checkpoint_id(self) -> str:
        return self.facts.checkpoint_id


class AlreadyCommitted(Exception):
    """A redelivered session whose first delivery committed: nothing to train, nothing to commit."""

    def __init__(self, checkpoint_id: str) -> None:
        self.checkpoint_id = checkpoint_id
        super().__init__(f"this session already committed checkpoint {checkpoint_id}")


class SessionPaused(Exception):
    """The worker is shutting down: the session saved an in-session checkpoint and should be sent again."""

    def __init__(self, iteration: int, why: str | None = None) -> None:
        self.iteration = iteration
        super().__init__(why or f"paused at iteration {iteration}; its in-session checkpoint is saved")


class TrainingProcessLost(SessionPaused):
    """A process of the session's group died (killed, out of memory): the session is sent again and goes on
    from its last in-session checkpoint, and the loss counts like a lost worker (RETRAIN_MAX_WORKER_LOSSES)."""


class RunLease(Protocol):
    """workers.coordination.run_lock.Lease, seen from here."""

    @property
    def fence_value(self) -> int: ...
    def check(self) -> None: ...
    def release(self) -> None: ...


@dataclass(frozen=True)
class TimeCap:
    seconds: float
    why: str


@dataclass(frozen=True)
class Controls:
    """How the surroundings steer a session. Local mode leaves all but `on_progress` unset: a git checkout
    has no concurrent sessions to fence off, and its commit is a compare-and-swap anyway."""

    on_progress: Callable[[Progress], None] | None = None
    should_stop: Callable[[], bool] | None = None  # a cancel request
    hold_run: Callable[[str], RunLease] | None = None  # the run's lease, or RunBusy
    # Called once the lease is held; may cap the session's time (seconds and why, e.g. the installation's
    # session time left today) or raise a RetrainError that ends the session before it reads anything.
    on_start: Callable[[], Awaitable[TimeCap | None]] | None = None
    max_time_s: float | None = None  # caps the profile's soft time limit
    max_time_why: str = "the App's longest session (RETRAIN_MAX_SESSION_S)"
    limits: Limits | None = None  # the operator's; checked again here, as a queued message outlives its config
    should_pause: Callable[[], bool] | None = None  # the worker is shutting down: save and hand back
    max_snapshot_bytes: int = MAX_TOTAL_BYTES  # the most training text (selected files together) a session reads
    pretrained: PretrainedSources = NOWHERE  # where `init_from` may read: nowhere unless allowed
    training: TrainingOptions = DEFAULT_TRAINING  # processes, micro-batches, compilation: the worker's own


async def run_session(
    repo: ProgressRepository,
    store: CheckpointStore,
    request: SessionRequest,
    *,
    store_prefix: str,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    controls: Controls | None = None,
) -> SessionResult:
    controls = controls or Controls(on_progress=on_progress, should_stop=should_stop)
    clock_start = time.monotonic()
    target = await locate(repo, request)
    if controls.limits is not None:
        problems = profile_problems(request.profile, target.config.profiles[request.profile], controls.limits,
                                    request.max_iters)
        if problems:
            raise SessionError("; ".join(problems))
    lease = await asyncio.to_thread(controls.hold_run, target.lock_name) if controls.hold_run else None
    try:
        if controls.on_start is not None:
            cap = await controls.on_start()
            if cap is not None and cap.seconds < (controls.max_time_s or float("inf")):
                controls = replace(controls, max_time_s=cap.seconds, max_time_why=cap.why)
        plan = await prepare(repo, store, request, store_prefix, target, max_snapshot_bytes=controls.max_snapshot_bytes,
                             pretrained=controls.pretrained, training=controls.training)
        if plan.committed is not None:
            raise AlreadyCommitted(plan.committed)
        if target.pull_number is not None:
            return await _evaluate_pull(store, request, f"{store_prefix}/{plan.run}", plan, controls, clock_start)
        return await _train_and_commit(repo, store, request, store_prefix, plan, controls, clock_start, lease)
    finally:
        if lease is not None:
            await asyncio.to_thread(lease.release)


async def _train_and_commit(
    repo: ProgressRepository, store: CheckpointStore, request: SessionRequest, store_prefix: str,
    plan: SessionPlan, controls: Controls, clock_start: float, lease: RunLease | None,
) -> SessionResult:
    run_prefix = f"{store_prefix}/{plan.run}"
    facts, inflight, facts_key = await _trained(store, request, plan, controls, clock_start, run_prefix)
    if lease is not None:
        await asyncio.to_thread(lease.check)  # fencing: a session that lost its run commits nothing
    commit_oid, branch, dropped = await commit_progress(
        repo, plan.config, plan.head.name, plan.head.oid, facts, request.max_checkpoints, plan.pending.entries,
        fence=lease.fence_value if lease is not None else None, unusable=plan.unusable,
    )
    entry_record = f"{run_prefix}/{facts.checkpoint_id}{ENTRY_RECORD}"
    try:  # committed: what is left over costs space, never the session's outcome
        free = await unshared_drops(repo, metadata_path(plan.config, plan.run), branch, dropped)
        await asyncio.to_thread(
            forget, store, run_prefix, free, (*plan.pending.record_keys, entry_record, inflight, facts_key)
        )
    except Exception:
        log.warning("session %s committed; cleaning up the store failed", request.session_id, exc_info=True)
    return SessionResult(facts=facts, commit_oid=commit_oid, branch=branch, stopped=facts.stopped, config=plan.config)


async def _evaluate_pull(
    store: CheckpointStore, request: SessionRequest, run_folder: str, plan: SessionPlan, controls: Controls,
    clock_start: float,
) -> SessionResult:
    """A pull request's session that commits nowhere: train on its text from the base branch's best and report.
    Its weights stay in the store under the run's `pulls/<number>/` folder, where no base-branch session
    takes them for its own uncommitted work (workers/session/pending.py reads the run's folder only)."""
    pull_folder = f"{run_folder}/{PULLS_FOLDER}/{request.pull_number}"
    facts, _, _ = await _trained(store, request, plan, controls, clock_start, pull_folder)
    return SessionResult(facts=facts, commit_oid=None, branch=None, stopped=facts.stopped, config=plan.config)


async def _trained(
    store: CheckpointStore, request: SessionRequest, plan: SessionPlan, controls: Controls, clock_start: float,
    folder: str,
) -> tuple[SessionFacts, str, str]:
    """The session's finished training in `folder`: what an earlier delivery stored, else trained now (from its
    in-session checkpoint when one was left) and stored. (facts, in-session checkpoint key, facts key)."""
    inflight = inflight_key(folder, request.session_id)
    facts_key = inflight.removesuffix(".pt") + ".facts.json"
    facts = await asyncio.to_thread(load_finished, store, facts_key, plan.notes, folder)
    if facts is None:  # not trained yet, or trained only in part by an earlier delivery
        facts = await _train(store, request, plan, controls, clock_start, folder, inflight)
        await asyncio.to_thread(store.put, facts_key, dump_facts(facts))
    return facts, inflight, facts_key


async def _train(
    store: CheckpointStore, request: SessionRequest, plan: SessionPlan, controls: Controls, clock_start: float,
    run_prefix: str, inflight: str,
) -> SessionFacts:
    """Train (from the in-session checkpoint when an earlier delivery left one), store the weights and the
    entry record, and describe the session."""
    started_at = utcnow()
    plan, so_far = await asyncio.to_thread(usable_inflight, store, inflight, plan)
    if so_far is not None:
        done = len(so_far.so_far.losses)
        plan.notes.append(
            f"resumed this session's own in-session checkpoint at iteration {so_far.state['iteration']} "
            f"({done} iterations were already trained before its worker stopped)"
        )
        log.info("session %s continues from its in-session checkpoint at %d", request.session_id,
                 so_far.state["iteration"])
        started_at = datetime.fromisoformat(so_far.so_far.started_at)

    profile = plan.config.profiles[request.profile]
    time_limit = min(profile.time_limit_s, controls.max_time_s or profile.time_limit_s)
    limited_by = "the profile's time limit" if time_limit == profile.time_limit_s else controls.max_time_why
    spent_before = so_far.so_far.spent_s if so_far else 0.0  # a redelivery does not restart the clock
    deadline = clock_start + time_limit - spent_before
    why: list[str] = []

    asking = Asking({STOPPED_ON_REQUEST: controls.should_stop, PAUSED: controls.should_pause})

    def stop() -> bool:
        said = asking.said() or (STOPPED_AT_TIME_LIMIT if time.monotonic() >= deadline else None)
        if said is not None:
            why.append(said)
        return said is not None

    nproc = min(controls.training.nproc, plan.train_config.batch_size)  # the batch stays the profile's
    if nproc < controls.training.nproc:
        plan.notes.append(f"trained on {nproc} processes, not {controls.training.nproc}: a batch of "
                          f"{plan.train_config.batch_size} sequences gives each process one at the most")

    def run(plan: SessionPlan, train_config: TrainConfig, resume: dict | None, initial: dict | None,
            on_checkpoint: Callable[[Snapshot], None] | None) -> TrainResult:
        return train_in_group(
            nproc, plan.model_config, train_config, plan.corpus, resume=resume, init_weights=initial,
            on_progress=controls.on_progress, should_stop=stop, on_checkpoint=on_checkpoint,
            checkpoint_every_s=profile.checkpoint_every_s, group_dir=controls.training.group_dir,
        )

    trial: Trial | None = None
    begun = int(plan.resume.state["iteration"]) if plan.resume else 0
    try:
        with asking:
            if so_far is None and plan.migration is not None and plan.resume is not None:
                plan, trial = await asyncio.to_thread(try_migration, plan, run)
                if trial.result is None:  # stopped during the trial before the moved side measured better
                    if why and why[0] == PAUSED:
                        raise SessionPaused(begun, "paused during the trial of a tokenizer move; sent again, it "
                                                   "tries again")
                    raise SessionError(f"stopped ({why[0] if why else 'asked'}) during the trial of a tokenizer "
                                       "move, before the moved lineage measured better; nothing was committed")
            start_iteration, target, parent, resume_state, prior, known_before = _where_it_starts(plan, so_far, trial)
            resumed_times = so_far.so_far.resumed_times + 1 if so_far else 0

            def so_far_with(losses: list[float], val_loss_before: float) -> SessionSoFar:
                return SessionSoFar(
                    start_iteration=start_iteration, target_iteration=target, parent_checkpoint=parent,
                    val_loss_before=known_before if known_before is not None else val_loss_before,
                    started_at=started_at.isoformat(), losses=[*prior, *losses], resumed_times=resumed_times,
                    spent_s=spent_before + time.monotonic() - clock_start,
                )

            def save_snapshot(snap: Snapshot) -> None:
                try:
                    save_inflight(store, inflight, snap.payload, so_far_with(snap.losses, snap.val_loss_before))
                except Exception:  # an unreachable store costs the safety net, not the session
                    log.warning("could not save the in-session checkpoint of %s", request.session_id, exc_info=True)

            if trial is not None and trial.cut_short:  # stopped during the trial: the side it kept is the session
                assert trial.result is not None
                result, prior = trial.result, []
            else:
                log.info("training %s: %d iterations from %s", request.profile, target - start_iteration - len(prior),
                         parent or "a fresh model")
                result = await asyncio.to_thread(
                    run, plan, replace(plan.train_config, max_iters=target - start_iteration - len(prior)),
                    resume_state, None if resume_state is not None else plan.initial_weights, save_snapshot,
                )
    except RankLost as lost:
        raise TrainingProcessLost(lost.snapshot_iteration or begun, str(lost)) from lost
    if not result.stopped_early:  # asked to stop after the last iteration (a group answers late): a whole session
        why.clear()
    if why and why[0] == PAUSED:
        await asyncio.to_thread(save_inflight, store, inflight, result.state,
                                so_far_with(result.losses, result.val_loss_before or 0.0))
        raise SessionPaused(result.end_iteration)
    if not math.isfinite(result.val_loss_after) or not all(map(math.isfinite, result.losses)):
        raise SessionError(
            f"training diverged: the loss stopped being a number by iteration {result.end_iteration} (is "
            f"learning_rate {plan.train_config.learning_rate:g} too high for this model?); nothing was committed"
        )
    if prior or known_before is not None:  # one session, as if it had never been interrupted or tried a move
        result = replace(result, start_iteration=start_iteration, losses=[*prior, *result.losses],
                         val_loss_before=known_before if known_before is not None else result.val_loss_before)
    stopped = (why[0] if why else STOPPED_ON_REQUEST) if result.stopped_early else None
    if stopped is not None:
        how = "on request" if stopped == STOPPED_ON_REQUEST else f"at {limited_by} ({time_limit:.0f} s)"
        plan.notes.append(
            f"stopped {how} after {result.end_iteration - start_iteration} of "
            f"{target - start_iteration} iterations; what was trained is committed"
        )
    preview = await asyncio.to_thread(write_preview, plan, result)
    finished_at = utcnow()
    key = f"{run_prefix}/{checkpoint_id(finished_at, result.end_iteration, request.session_id)}"
    stored = await asyncio.to_thread(store.put, f"{key}.pt", save_state(result.state))
    facts = replace(session_facts(plan, request, result, stored, started_at, finished_at, parent=parent,
                                  stopped=stopped), sample=preview)
    record = json.dumps(new_entry(facts).model_dump(mode="json"), sort_keys=True).encode()
    await asyncio.to_thread(store.put, f"{key}{ENTRY_RECORD}", record)
    return facts


def _where_it_starts(plan: SessionPlan, so_far: InFlight | None, trial: Trial | None
                     ) -> tuple[int, int, str | None, dict | None, list[float], float | None]:
    """(start iteration, target iteration, parent, state to resume, losses already trained, val loss before when
    already known): from an earlier delivery's in-session checkpoint, else from the kept side of a move's trial
    (whose iterations count in the session, and the losing side's against it), else from the plan."""
    if so_far is not None:
        past = so_far.so_far
        return (past.start_iteration, past.target_iteration, past.parent_checkpoint, so_far.state, past.losses,
                past.val_loss_before)
    if trial is not None:
        start = trial.result.start_iteration
        return (start, start + plan.train_config.max_iters - trial.dropped_iters, trial.parent, trial.result.state,
                trial.result.losses, trial.val_before)
    start = int(plan.resume.state["iteration"]) if plan.resume else 0
    return (start, start + plan.train_config.max_iters, plan.resume.entry.checkpoint_id if plan.resume else None,
            plan.resume.state if plan.resume else None, [], None)


PREVIEW = SampleSettings(max_new_tokens=120, temperature=0.8, top_k=200)
PREVIEW_CHARS = 600


def write_preview(plan: SessionPlan, result: TrainResult) -> str:
    """A few lines the new weights write after a line break, for the report: what a number cannot show. A
    failure here costs the preview, never the session."""
    try:
        text, _ = sample_text(plan.model_config, result.state, plan.corpus.tokenizer, b"\n",
                              replace(PREVIEW, seed=plan.train_config.seed), torch.device(result.device))
    except Exception:
        log.warning("could not write the session's preview", exc_info=True)
        return ""
    return text[:PREVIEW_CHARS]


def load_finished(store: CheckpointStore, key: str, notes: list[str], within: str) -> SessionFacts | None:
    """An earlier delivery of this session trained and stored its checkpoint but did not commit it."""
    raw = store.read(key)
    if raw is None:
        return None
    try:
        facts = load_facts(raw)
    except ValueError:
        notes.append("ignored an unreadable record of this session's finished training")
        return None
    if store.size(facts.storage, within=within) != facts.storage.bytes:
        notes.append("this session's earlier training left no weights; training again")
        return None
    again = "an earlier delivery of this session trained it; committing that result"
    return replace(facts, notes=(*facts.notes, again))


def usable_inflight(store: CheckpointStore, key: str, plan: SessionPlan) -> tuple[SessionPlan, InFlight | None]:
    """This session's in-session checkpoint when an earlier delivery left one that still fits the data, with
    the plan it continues: when the earlier delivery tried a move of its lineage, the side it kept."""
    try:
        found = load_inflight(store, key)
    except ValueError as exc:
        plan.notes.append(f"ignored this session's unreadable in-session checkpoint ({exc})")
        return plan, None
    if found is None:
        return plan, None
    for side in (plan, plan.migrated() if plan.migration is not None else None):
        if side is not None and found.state.get("corpus_fingerprint") == side.corpus.fingerprint() and (
            found.state.get("model_config") == side.model_config.to_dict()
        ):
            return replace(side, migration=None), found
    plan.notes.append("ignored this session's in-session checkpoint: the data or the model changed since")
    return plan, None


def session_facts(
    plan: SessionPlan, request: SessionRequest, result: TrainResult, stored: reg.StoredObject,
    started_at: datetime, finished_at: datetime, *, parent: str | None, stopped: str | None = None,
) -> SessionFacts:
    corpus, config = plan.corpus, plan.config
    per_byte = 1.0 / corpus.train_bytes_per_token()  # the loop's losses are per token; figures are per byte
    return SessionFacts(
        session_id=request.session_id, profile=request.profile, run=plan.run, progress_dir=config.progress_dir,
        trigger=request.trigger, sender=request.sender, delivery_id=request.delivery_id,
        started_at=started_at, finished_at=finished_at,
        parent_checkpoint=parent,
        start_iteration=result.start_iteration, end_iteration=result.end_iteration,
        train_loss=result.train_loss, val_loss_before=result.val_loss_before, val_loss_after=result.val_loss_after,
        unigram_val_loss=unigram_val_loss(corpus),
        first_loss=result.losses[0], last_loss=result.losses[-1], learning_rate=result.learning_rate,
        tokens_per_s=result.tokens_per_s, mfu=result.mfu, device=result.device,
        tokens_processed=result.end_iteration * plan.train_config.batch_size * plan.model_config.block_size,
        model_config=plan.model_config.to_dict(), training_config=plan.train_config.to_dict(),
        data_config={
            "include": list(config.data.include), "val_fraction": config.data.val_fraction, "split": corpus.split,
            "train_files": list(corpus.train_files), "val_files": list(corpus.val_files),
            "train_tokens": int(corpus.train.numel()), "val_tokens": int(corpus.val.numel()),
        },
        storage=stored, fingerprint=plan.fingerprint, notes=tuple(plan.notes), stopped=stopped,
        loss_curve=tuple((int(i), loss * per_byte) for i, loss in downsample(result.losses, result.start_iteration)),
        evaluations=dict(plan.reevaluation.losses), reevaluation_s=plan.reevaluation.seconds,
        data_commit=plan.data_commit, world_size=result.world_size,
    )
