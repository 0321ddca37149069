"""What a session will do, decided from what the repository says at the branch head: which run, which
training text, which model and optimiser settings, and where training starts (the best compatible stored
checkpoint, or a fresh model). Reads through ProgressRepository and the store; trains nothing."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from app.errors import SessionError
from app.github import BranchHead
from app.repo_config import CONFIG_PATH, Profile, RepoConfig, parse_repo_config
from workers.session import registry as reg
from workers.session.history import parse_history
from workers.session.pending import Pending, find_pending
from workers.session.repos import ProgressRepository
from workers.session.snapshot import select_files
from workers.session.store import CheckpointStore, StoreError
from workers.trainer.data import TOKENIZER_ID, Corpus, build_corpus
from workers.trainer.model import ModelConfig
from workers.trainer.train import TrainConfig, load_state

log = logging.getLogger(__name__)


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
        notes=notes, pending=pending, committed=committed,
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
