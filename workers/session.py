"""One training session, the same pipeline for workers (GitHub) and local mode (a git checkout):

read config and registry at the branch head → choose the best compatible stored checkpoint → train →
store the weights → commit registry and summary in one compare-and-swap commit (re-read and merge when
the branch moved) → drop what retention no longer keeps from the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.errors import SessionError
from app.github import BranchHead, StaleHead
from app.repo_config import CONFIG_PATH, Profile, RepoConfig, parse_repo_config
from workers import registry as reg
from workers.history import appended, downsample, history_line, parse_history
from workers.loss_chart import render_svg
from workers.pending import ENTRY_RECORD, Pending, find_pending
from workers.progress import SessionFacts, checkpoint_id, commit_message, new_entry, summary, to_json_bytes, utcnow
from workers.repos import ProgressRepository
from workers.snapshot import select_files
from workers.store import CheckpointStore, StoreError
from workers.trainer.baseline import unigram_val_loss
from workers.trainer.data import TOKENIZER_ID, Corpus, build_corpus
from workers.trainer.model import ModelConfig
from workers.trainer.train import Progress, TrainConfig, TrainResult, load_state, save_state, train

log = logging.getLogger(__name__)
COMMIT_ATTEMPTS = 4


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
    stopped_early: bool = False

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


async def prepare(
    repo: ProgressRepository, store: CheckpointStore, request: SessionRequest, store_prefix: str
) -> SessionPlan:
    """Read config, registry and training text at one commit; choose where training starts."""
    default_head = await repo.head(None)
    config = parse_repo_config(await repo.read_file(CONFIG_PATH, default_head.oid))
    branch = config.branch or request.branch
    head = default_head if branch in (None, default_head.name) else await repo.head(branch)
    profile = config.profiles.get(request.profile)
    if profile is None:
        raise SessionError(f"unknown profile `{request.profile}`; this repository has: {', '.join(config.profiles)}")
    run = config.run_name(request.profile)
    registry, notes = reg.parse_registry(await repo.read_file(metadata_path(config, run), head.oid))
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
        notes=notes, pending=pending,
    )


async def run_session(
    repo: ProgressRepository,
    store: CheckpointStore,
    request: SessionRequest,
    *,
    store_prefix: str,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SessionResult:
    started_at = utcnow()
    plan = await prepare(repo, store, request, store_prefix)
    log.info(
        "training %s on %s: %d iterations from %s", request.profile, repo.name, plan.train_config.max_iters,
        plan.resume.entry.checkpoint_id if plan.resume else "a fresh model",
    )
    result = await asyncio.to_thread(
        train, plan.model_config, plan.train_config, plan.corpus,
        resume=plan.resume.state if plan.resume else None, on_progress=on_progress, should_stop=should_stop,
    )
    if result.stopped_early:
        plan.notes.append(
            f"stopped on request after {result.end_iteration - result.start_iteration} of "
            f"{plan.train_config.max_iters} iterations; what was trained is committed"
        )
    finished_at = utcnow()
    key = f"{store_prefix}/{plan.run}/{checkpoint_id(finished_at, result.end_iteration, request.session_id)}"
    stored = await asyncio.to_thread(store.put, f"{key}.pt", save_state(result.state))
    facts = session_facts(plan, request, result, stored, started_at, finished_at)
    record = json.dumps(new_entry(facts).model_dump(mode="json"), sort_keys=True).encode()
    await asyncio.to_thread(store.put, f"{key}{ENTRY_RECORD}", record)
    commit_oid, branch, dropped = await commit_progress(
        repo, plan.config, plan.head.name, plan.head.oid, facts, request.max_checkpoints, plan.pending.entries
    )
    await asyncio.to_thread(forget, store, dropped, (*plan.pending.record_keys, f"{key}{ENTRY_RECORD}"))
    return SessionResult(facts=facts, commit_oid=commit_oid, branch=branch, stopped_early=result.stopped_early)


def session_facts(
    plan: SessionPlan, request: SessionRequest, result: TrainResult, stored: reg.StoredObject,
    started_at: datetime, finished_at: datetime,
) -> SessionFacts:
    corpus, config = plan.corpus, plan.config
    return SessionFacts(
        session_id=request.session_id, profile=request.profile, run=plan.run, progress_dir=config.progress_dir,
        trigger=request.trigger, sender=request.sender, delivery_id=request.delivery_id,
        started_at=started_at, finished_at=finished_at,
        parent_checkpoint=plan.resume.entry.checkpoint_id if plan.resume else None,
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
        storage=stored, fingerprint=plan.fingerprint, notes=tuple(plan.notes),
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
    max_checkpoints: int | None = None, pending: tuple[reg.CheckpointEntry, ...] = (),
) -> tuple[str, str, list[reg.CheckpointEntry]]:
    """Commit registry + summary; when the branch moved, merge into what is there now and try again."""
    entry = new_entry(facts)
    headline, body = commit_message(facts)
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
