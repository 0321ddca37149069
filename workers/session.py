"""One training session, the same pipeline for workers (GitHub) and local mode (a git checkout):

read config and registry at the branch head → choose the best compatible stored checkpoint → train →
store the weights → commit registry and summary in one compare-and-swap commit (re-read and merge when
the branch moved) → drop what retention no longer keeps from the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from app.errors import SessionError
from app.github import BranchHead, StaleHead
from app.repo_config import CONFIG_PATH, Profile, RepoConfig, parse_repo_config
from workers import registry as reg
from workers.history import appended, downsample, history_line, parse_history
from workers.inflight import InFlight, SessionSoFar, inflight_key, load_inflight, save_inflight
from workers.loss_chart import render_svg
from workers.pending import ENTRY_RECORD, Pending, find_pending
from workers.progress import (
    STOPPED_AT_TIME_LIMIT,
    STOPPED_ON_REQUEST,
    SessionFacts,
    checkpoint_id,
    commit_message,
    dump_facts,
    load_facts,
    new_entry,
    summary,
    to_json_bytes,
    utcnow,
)
from workers.repos import ProgressRepository
from workers.snapshot import select_files
from workers.store import CheckpointStore, StoreError
from workers.trainer.baseline import unigram_val_loss
from workers.trainer.data import TOKENIZER_ID, Corpus, build_corpus
from workers.trainer.model import ModelConfig
from workers.trainer.train import Progress, Snapshot, TrainConfig, TrainResult, load_state, save_state, train

log = logging.getLogger(__name__)
COMMIT_ATTEMPTS = 4
PAUSED = "paused"


@dataclass(frozen=True)
class SessionRequest:
    """What was asked for; plain values so it travels as a Celery message."""

    session_id: str
    profile: str = "ci"
    max_iters: int | None = None
    trigger: str = "local"
    sender: str | None = None
    delivery_id: str | None = None
    fresh: bool = False  # start from a new model; earlier checkpoints stay in the registry and the store
    max_checkpoints: int | None = None  # this session's retention, overriding the config's
    branch: str | None = None  # the trigger's branch; the config's `branch` wins, then the default branch


@dataclass(frozen=True)
class SessionResult:
    facts: SessionFacts
    commit_oid: str
    branch: str
    stopped: str | None = None  # see SessionFacts.stopped

    @property
    def checkpoint_id(self) -> str:
        return self.facts.checkpoint_id


@dataclass(frozen=True)
class Resume:
    entry: reg.CheckpointEntry
    state: dict[str, Any]


def model_config_for(profile: Profile) -> ModelConfig:
    return ModelConfig(
        n_layer=profile.n_layer, n_head=profile.n_head, n_embd=profile.n_embd,
        block_size=profile.block_size, dropout=profile.dropout,
    )


def train_config_for(profile: Profile, max_iters: int | None) -> TrainConfig:
    return TrainConfig(
        max_iters=max_iters or profile.max_iters, batch_size=profile.batch_size,
        learning_rate=profile.learning_rate, min_lr=profile.min_lr, warmup_iters=profile.warmup_iters,
        lr_decay_iters=profile.lr_decay_iters, weight_decay=profile.weight_decay, eval_iters=profile.eval_iters,
    )


def metadata_path(config: RepoConfig, run: str) -> str:
    return f"{config.progress_dir}/{run}/cache/metadata.json"


def choose_resume(
    store: CheckpointStore, registry: reg.Registry, fingerprint: reg.Fingerprint, notes: list[str]
) -> Resume | None:
    """The best compatible checkpoint whose stored weights verify; a bad object is skipped, not fatal."""
    for entry in reg.resume_candidates(registry, fingerprint):
        assert entry.storage is not None
        try:
            return Resume(entry, load_state(store.get(entry.storage)))
        except (StoreError, ValueError) as exc:
            notes.append(f"skipped {entry.checkpoint_id}: {exc}")
            log.warning("checkpoint not usable", extra={"checkpoint": entry.checkpoint_id, "reason": str(exc)})
    skipped = reg.incompatible_count(registry, fingerprint)
    if skipped:
        notes.append(f"{skipped} stored checkpoint(s) were trained on other data or another model shape")
    return None


@dataclass(frozen=True)
class SessionPlan:
    """What the repository says at the branch head, and what this session will therefore do."""

    config: RepoConfig
    run: str
    head: BranchHead
    corpus: Corpus
    model_config: ModelConfig
    train_config: TrainConfig
    fingerprint: reg.Fingerprint
    resume: Resume | None
    notes: list[str]
    pending: Pending
    committed: str | None  # the checkpoint this very session already committed (a redelivered task)
    time_limit_s: float


@dataclass(frozen=True)
class Target:
    """Where the session's progress goes: read before taking the run's lease, which needs the run's name."""

    config: RepoConfig
    run: str
    default_head: BranchHead
    branch: str | None


async def locate(repo: ProgressRepository, request: SessionRequest) -> Target:
    default_head = await repo.head(None)
    config = parse_repo_config(await repo.read_file(CONFIG_PATH, default_head.oid))
    if request.profile not in config.profiles:
        raise SessionError(f"unknown profile `{request.profile}`; this repository has: {', '.join(config.profiles)}")
    return Target(config, config.run_name(request.profile), default_head, config.branch or request.branch)


async def prepare(
    repo: ProgressRepository, store: CheckpointStore, request: SessionRequest, store_prefix: str, target: Target
) -> SessionPlan:
    """Read registry and training text at one commit; choose where training starts."""
    config, run = target.config, target.run
    branch = target.branch
    head = target.default_head if branch in (None, target.default_head.name) else await repo.head(branch)
    profile = config.profiles[request.profile]
    registry, notes = reg.parse_registry(await repo.read_file(metadata_path(config, run), head.oid))
    history = parse_history(await repo.read_file(f"{config.progress_dir}/{run}/history.jsonl", head.oid))
    committed = committed_by(registry, history, request.session_id)
    pending = await asyncio.to_thread(find_pending, store, f"{store_prefix}/{run}", registry, notes)
    registry = reg.merge(registry, {e.checkpoint_id: e for e in pending.entries})
    corpus = load_corpus(await repo.files(head.oid), config, profile)
    model_config = model_config_for(profile)
    fingerprint = reg.Fingerprint(
        data_sha256=corpus.fingerprint(), tokenizer=TOKENIZER_ID,
        model_config_sha256=reg.model_config_sha256(model_config.to_dict()),
    )
    if request.fresh:
        resume = None
        notes.append(f"fresh start requested; the {len(registry)} earlier checkpoint(s) are kept")
    else:
        resume = await asyncio.to_thread(choose_resume, store, registry, fingerprint, notes)
        if resume is None and config.on_incompatible == "stop" and reg.incompatible_count(registry, fingerprint):
            raise SessionError(
                "every stored checkpoint was trained on other data or another model shape, and "
                f"`on_incompatible: stop` is set in {CONFIG_PATH}; start a fresh model explicitly to continue"
            )
    return SessionPlan(
        config=config, run=run, head=head, corpus=corpus, model_config=model_config,
        train_config=train_config_for(profile, request.max_iters), fingerprint=fingerprint, resume=resume,
        notes=notes, pending=pending, committed=committed, time_limit_s=profile.time_limit_s,
    )


def committed_by(registry: reg.Registry, history: list[dict[str, Any]], session_id: str) -> str | None:
    """The checkpoint a session already committed: its history line stays even when retention drops it."""
    for line in history:
        if line.get("session") == session_id:
            return str(line.get("checkpoint_id"))
    for entry in registry.values():
        extra = entry.model_extra or {}
        if isinstance(extra.get("session"), dict) and extra["session"].get("id") == session_id:
            return entry.checkpoint_id
    return None


class AlreadyCommitted(Exception):
    """A redelivered session whose first delivery committed: nothing to train, nothing to commit."""

    def __init__(self, checkpoint_id: str) -> None:
        self.checkpoint_id = checkpoint_id
        super().__init__(f"this session already committed checkpoint {checkpoint_id}")


class SessionPaused(Exception):
    """The worker is shutting down: the session saved an in-session checkpoint and should be sent again."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration
        super().__init__(f"paused at iteration {iteration}; its in-session checkpoint is saved")


class RunLease(Protocol):
    """workers.run_lock.Lease, seen from here."""

    @property
    def fence_value(self) -> int: ...
    def check(self) -> None: ...
    def release(self) -> None: ...


@dataclass(frozen=True)
class Controls:
    """How the surroundings steer a session. Local mode leaves all but `on_progress` unset: a git checkout
    has no concurrent sessions to fence off, and its commit is a compare-and-swap anyway."""

    on_progress: Callable[[Progress], None] | None = None
    should_stop: Callable[[], bool] | None = None  # a cancel request
    hold_run: Callable[[str], RunLease] | None = None  # the run's lease, or RunBusy
    on_start: Callable[[], Awaitable[None]] | None = None  # called once the lease is held
    max_time_s: float | None = None  # caps the profile's soft time limit
    should_pause: Callable[[], bool] | None = None  # the worker is shutting down: save and hand back


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
    lease = await asyncio.to_thread(controls.hold_run, target.run) if controls.hold_run else None
    try:
        if controls.on_start is not None:
            await controls.on_start()
        plan = await prepare(repo, store, request, store_prefix, target)
        if plan.committed is not None:
            raise AlreadyCommitted(plan.committed)
        return await _train_and_commit(repo, store, request, store_prefix, plan, controls, clock_start, lease)
    finally:
        if lease is not None:
            await asyncio.to_thread(lease.release)


async def _train_and_commit(
    repo: ProgressRepository, store: CheckpointStore, request: SessionRequest, store_prefix: str,
    plan: SessionPlan, controls: Controls, clock_start: float, lease: RunLease | None,
) -> SessionResult:
    run_prefix = f"{store_prefix}/{plan.run}"
    inflight = inflight_key(run_prefix, request.session_id)
    facts_key = inflight.removesuffix(".pt") + ".facts.json"
    facts = await asyncio.to_thread(load_finished, store, facts_key, plan.notes)
    if facts is None:  # not trained yet, or trained only in part by an earlier delivery
        facts = await _train(store, request, plan, controls, clock_start, run_prefix, inflight)
        await asyncio.to_thread(store.put, facts_key, dump_facts(facts))
    if lease is not None:
        await asyncio.to_thread(lease.check)  # fencing: a session that lost its run commits nothing
    commit_oid, branch, dropped = await commit_progress(
        repo, plan.config, plan.head.name, plan.head.oid, facts, request.max_checkpoints, plan.pending.entries,
        fence=lease.fence_value if lease is not None else None,
    )
    entry_record = f"{run_prefix}/{facts.checkpoint_id}{ENTRY_RECORD}"
    await asyncio.to_thread(
        forget, store, dropped, (*plan.pending.record_keys, entry_record, inflight, facts_key)
    )
    return SessionResult(facts=facts, commit_oid=commit_oid, branch=branch, stopped=facts.stopped)


async def _train(
    store: CheckpointStore, request: SessionRequest, plan: SessionPlan, controls: Controls, clock_start: float,
    run_prefix: str, inflight: str,
) -> SessionFacts:
    """Train (from the in-session checkpoint when an earlier delivery left one), store the weights and the
    entry record, and describe the session."""
    started_at = utcnow()
    so_far = await asyncio.to_thread(usable_inflight, store, inflight, plan, request.fresh)
    if so_far is not None:
        done = len(so_far.so_far.losses)
        plan.notes.append(
            f"resumed this session's own in-session checkpoint at iteration {so_far.state['iteration']} "
            f"({done} iterations were already trained before its worker stopped)"
        )
        log.info("session %s continues from its in-session checkpoint at %d", request.session_id,
                 so_far.state["iteration"])
        started_at = datetime.fromisoformat(so_far.so_far.started_at)
    start_iteration = so_far.so_far.start_iteration if so_far else (
        int(plan.resume.state["iteration"]) if plan.resume else 0)
    target = so_far.so_far.target_iteration if so_far else start_iteration + plan.train_config.max_iters
    parent = so_far.so_far.parent_checkpoint if so_far else (plan.resume.entry.checkpoint_id if plan.resume else None)
    resume_state = so_far.state if so_far else (plan.resume.state if plan.resume else None)
    prior = so_far.so_far.losses if so_far else []
    resumed_times = so_far.so_far.resumed_times + 1 if so_far else 0
    log.info("training %s: %d iterations from %s", request.profile, target - start_iteration - len(prior),
             parent or "a fresh model")

    time_limit = min(plan.time_limit_s, controls.max_time_s or plan.time_limit_s)
    spent_before = so_far.so_far.spent_s if so_far else 0.0  # a redelivery does not restart the clock
    deadline = clock_start + time_limit - spent_before
    why: list[str] = []

    def stop() -> bool:
        if controls.should_stop is not None and controls.should_stop():
            why.append(STOPPED_ON_REQUEST)
            return True
        if controls.should_pause is not None and controls.should_pause():
            why.append(PAUSED)
            return True
        if time.monotonic() >= deadline:
            why.append(STOPPED_AT_TIME_LIMIT)
            return True
        return False

    def so_far_with(losses: list[float], val_loss_before: float) -> SessionSoFar:
        return SessionSoFar(
            start_iteration=start_iteration, target_iteration=target, parent_checkpoint=parent,
            val_loss_before=so_far.so_far.val_loss_before if so_far else val_loss_before,
            started_at=started_at.isoformat(), losses=[*prior, *losses], resumed_times=resumed_times,
            spent_s=spent_before + time.monotonic() - clock_start,
        )

    def save_snapshot(snap: Snapshot) -> None:
        try:
            save_inflight(store, inflight, snap.payload, so_far_with(snap.losses, snap.val_loss_before))
        except Exception:  # an unreachable store costs the safety net, not the session
            log.warning("could not save the in-session checkpoint of %s", request.session_id, exc_info=True)

    profile = plan.config.profiles[request.profile]
    result = await asyncio.to_thread(
        train, plan.model_config, replace(plan.train_config, max_iters=target - start_iteration - len(prior)),
        plan.corpus, resume=resume_state, on_progress=controls.on_progress, should_stop=stop,
        on_checkpoint=save_snapshot, checkpoint_every_s=profile.checkpoint_every_s,
    )
    if why and why[0] == PAUSED:
        await asyncio.to_thread(save_inflight, store, inflight, result.state,
                                so_far_with(result.losses, result.val_loss_before or 0.0))
        raise SessionPaused(result.end_iteration)
    if so_far is not None:  # one session, as if it had never been interrupted
        result = replace(result, start_iteration=start_iteration, losses=[*prior, *result.losses],
                         val_loss_before=so_far.so_far.val_loss_before)
    stopped = (why[0] if why else STOPPED_ON_REQUEST) if result.stopped_early else None
    if stopped is not None:
        how = "on request" if stopped == STOPPED_ON_REQUEST else f"at the profile's time limit ({time_limit:.0f} s)"
        plan.notes.append(
            f"stopped {how} after {result.end_iteration - start_iteration} of "
            f"{target - start_iteration} iterations; what was trained is committed"
        )
    finished_at = utcnow()
    key = f"{run_prefix}/{checkpoint_id(finished_at, result.end_iteration, request.session_id)}"
    stored = await asyncio.to_thread(store.put, f"{key}.pt", save_state(result.state))
    facts = session_facts(plan, request, result, stored, started_at, finished_at, parent=parent, stopped=stopped)
    record = json.dumps(new_entry(facts).model_dump(mode="json"), sort_keys=True).encode()
    await asyncio.to_thread(store.put, f"{key}{ENTRY_RECORD}", record)
    return facts


def load_finished(store: CheckpointStore, key: str, notes: list[str]) -> SessionFacts | None:
    """An earlier delivery of this session trained and stored its checkpoint but did not commit it."""
    raw = store.read(key)
    if raw is None:
        return None
    try:
        facts = load_facts(raw)
    except ValueError:
        notes.append("ignored an unreadable record of this session's finished training")
        return None
    if store.size(facts.storage) != facts.storage.bytes:
        notes.append("this session's earlier training left no weights; training again")
        return None
    again = "an earlier delivery of this session trained it; committing that result"
    return replace(facts, notes=(*facts.notes, again))


def usable_inflight(store: CheckpointStore, key: str, plan: SessionPlan, fresh: bool) -> InFlight | None:
    """This session's in-session checkpoint when an earlier delivery left one that still fits the data."""
    try:
        found = load_inflight(store, key)
    except ValueError as exc:
        plan.notes.append(f"ignored this session's unreadable in-session checkpoint ({exc})")
        return None
    if found is None:
        return None
    if found.state.get("corpus_fingerprint") != plan.corpus.fingerprint() or (
        found.state.get("model_config") != plan.model_config.to_dict()
    ):
        plan.notes.append("ignored this session's in-session checkpoint: the data or the model changed since")
        return None
    return found


def session_facts(
    plan: SessionPlan, request: SessionRequest, result: TrainResult, stored: reg.StoredObject,
    started_at: datetime, finished_at: datetime, *, parent: str | None, stopped: str | None = None,
) -> SessionFacts:
    corpus, config = plan.corpus, plan.config
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
        loss_curve=tuple((int(i), loss) for i, loss in downsample(result.losses, result.start_iteration)),
    )


def load_corpus(snapshot: dict[str, bytes], config: RepoConfig, profile: Profile) -> Corpus:
    files = select_files(snapshot, config.data.include, exclude_dirs=[config.progress_dir])
    if not files:
        raise SessionError(
            f"no training text: no file matches data.include {list(config.data.include)} in {CONFIG_PATH}"
        )
    try:
        return build_corpus(files, val_fraction=config.data.val_fraction, block_size=profile.block_size)
    except ValueError as exc:
        raise SessionError(f"training text is not usable: {exc}") from exc


async def commit_progress(
    repo: ProgressRepository, config: RepoConfig, branch: str, head: str, facts: SessionFacts,
    max_checkpoints: int | None = None, pending: tuple[reg.CheckpointEntry, ...] = (), fence: int | None = None,
) -> tuple[str, str, list[reg.CheckpointEntry]]:
    """Commit registry + summary; when the branch moved, merge into what is there now and try again."""
    entry = new_entry(facts)
    headline, body = commit_message(facts)
    if fence is not None:  # which lease committed: an audit trail of one-session-at-a-time
        body = f"{body}\n\nRetrain-Fence: {fence}"
    path = metadata_path(config, facts.run)
    history_path = f"{facts.run_dir}/history.jsonl"
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        current, _ = reg.parse_registry(await repo.read_file(path, head))
        current = reg.merge(current, {e.checkpoint_id: e for e in pending})
        kept, dropped = reg.retain(
            reg.with_entry(current, entry), max_checkpoints or config.retention.max_checkpoints,
            pinned=entry.checkpoint_id,
        )
        history = appended(await repo.read_file(history_path, head), history_line(facts))
        files = {
            path: reg.dump_registry(kept),
            f"{facts.run_dir}/training_summary.json": to_json_bytes(summary(facts, kept)),
            history_path: history,
            f"{facts.run_dir}/loss.svg": render_svg(parse_history(history), f"{facts.run}: loss").encode(),
        }
        try:
            return await repo.commit(branch, head, files, headline, body), branch, dropped
        except StaleHead:
            if attempt == COMMIT_ATTEMPTS:
                raise
            log.info("branch %s moved; merging and retrying (attempt %d)", branch, attempt + 1)
            await asyncio.sleep(0.2 * 2**attempt)
            head = (await repo.head(branch)).oid
    raise AssertionError("unreachable")


def forget(store: CheckpointStore, dropped: list[reg.CheckpointEntry], records: tuple[str, ...]) -> None:
    """After the commit has landed: delete the weights retention dropped, and the entry records the
    commit now holds."""
    for entry in dropped:
        if entry.storage is not None:
            store.delete(entry.storage)
    for key in records:
        store.remove(key)
