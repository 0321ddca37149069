"""What a session will do, decided from what the repository says at the branch head: which run, which
training text, which model and optimiser settings, and where training starts (the best compatible stored
checkpoint, or a fresh model). Reads through ProgressRepository and the store; trains nothing."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

from app.config.repo_config import CONFIG_PATH, Profile, RepoConfig, parse_repo_config
from app.errors import SessionError
from app.github.client import BranchHead
from workers.session import registry as reg
from workers.session.history import parse_history
from workers.session.migration import TEXT_BYTES, Migration, carried, consider, declined, fingerprint_of
from workers.session.pending import Pending, find_merged_pulls, find_pending, pull_numbers
from workers.session.pretrained import NOWHERE, PretrainedSources
from workers.session.repos import ProgressRepository, PullsUnknown
from workers.session.run_names import run_lock_name
from workers.session.snapshot import MAX_TOTAL_BYTES, selection
from workers.session.store import CheckpointStore, StoreError
from workers.session.tokenizer_choice import choose_base, choose_tokenizer
from workers.session.training_options import DEFAULT_TRAINING, TrainingOptions
from workers.trainer.checkpoint import check_model_config
from workers.trainer.data import Corpus, SplitText, bits_per_byte, encode_split, split_text
from workers.trainer.device import resolve_device
from workers.trainer.model import ModelConfig
from workers.trainer.tokenizer import BPE_KIND, BYTES, Tokenizer
from workers.trainer.train import TrainConfig, evaluate, load_state

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
    # A `/retrain` on a pull request (see workers/jobs/pull_requests.py): the session trains on the text at its
    # head from the base branch's (`branch`) best checkpoint and commits nowhere (session.py `_evaluate_pull`).
    pull_number: int | None = None
    pull_head_sha: str | None = None
    pull_head_ref: str | None = None


@dataclass(frozen=True)
class Resume:
    entry: reg.CheckpointEntry
    state: dict[str, Any]


@dataclass(frozen=True)
class Reevaluation:
    """Checkpoints measured on today's validation set before choosing, because it changed since."""

    losses: dict[str, float] = field(default_factory=dict)  # checkpoint id -> val loss on today's set
    seconds: float = 0.0


def model_config_for(profile: Profile, vocab_size: int | None = None) -> ModelConfig:
    """The profile's network; `vocab_size` is the tokenizer's (the profile's own when not given)."""
    vocab = vocab_size or (BYTES.vocab_size if profile.tokenizer == "bytes" else profile.vocab_size)
    return ModelConfig(
        n_layer=profile.n_layer, n_head=profile.n_head, n_embd=profile.n_embd,
        block_size=profile.block_size, dropout=profile.dropout, vocab_size=vocab,
    )


def train_config_for(profile: Profile, max_iters: int | None, session_id: str) -> TrainConfig:
    iters = max_iters or profile.max_iters
    return TrainConfig(
        max_iters=iters, batch_size=profile.batch_size,
        learning_rate=profile.learning_rate, min_lr=profile.min_lr, warmup_iters=profile.warmup_iters,
        cooldown_iters=round(profile.cooldown_fraction * iters), weight_decay=profile.weight_decay,
        seed=session_seed(session_id), average_horizon=profile.average_horizon,
    )


def session_seed(session_id: str) -> int:
    """Each session its own stream (sampler, dropout): two sessions from one parent never replay one
    trajectory, so a retry after a regression can do better; a redelivered session keeps its seed."""
    return int.from_bytes(hashlib.sha256(f"retrain-seed:{session_id}".encode()).digest()[:6], "big")


def shape_of(profile: Profile, vocab_size: int) -> str:
    return reg.shape_sha256(model_config_for(profile, vocab_size).to_dict())


def lineage_for(model_config: ModelConfig, tokenizer_id: str) -> reg.Lineage:
    return reg.Lineage(tokenizer=tokenizer_id, shape_sha256=reg.shape_sha256(model_config.to_dict()))


def metadata_path(config: RepoConfig, run: str) -> str:
    return f"{config.progress_dir}/{run}/cache/metadata.json"


def choose_resume(
    store: CheckpointStore, registry: reg.Registry, model_config: ModelConfig, corpus: Corpus, budget: int,
    notes: list[str], within: str, unusable: set[str], loaded: dict[str, dict[str, Any]] | None = None,
) -> tuple[Resume | None, Reevaluation]:
    """The best checkpoint of this lineage on today's validation set, whose stored weights verify.

    Candidates measured on another validation set are measured again first (at most `budget` of them,
    best by their old figure; the time counts against the session's limit, which started before this).
    A bad object is skipped with a note, never fatal, and added to `unusable` (for retention). `loaded`:
    payloads already read and verified (choosing the tokenizer reads one), by checkpoint id.
    """
    lineage = lineage_for(model_config, corpus.tokenizer.id)
    loaded = loaded or {}
    val_sha256 = corpus.val_fingerprint(model_config.block_size)
    started = time.monotonic()
    losses: dict[str, float] = {}
    best: tuple[float, str, dict[str, Any]] | None = None  # keep one loaded payload, not all of them
    for entry in reg.to_reevaluate(registry, lineage, val_sha256, budget):
        try:
            payload = _load(store, entry, model_config, within, loaded)
            loss = evaluate(model_config, payload, corpus)
            if not math.isfinite(loss):
                raise ValueError(f"its val loss on today's validation set is {loss}")
        except (StoreError, ValueError) as exc:
            _skip(entry, exc, notes, unusable)
            continue
        losses[entry.checkpoint_id] = loss
        if best is None or loss < best[0]:
            best = (loss, entry.checkpoint_id, payload)
    again = Reevaluation(losses, time.monotonic() - started)
    if losses:
        figures = ", ".join(f"{cid} {bits_per_byte(loss):.4f}" for cid, loss in losses.items())
        notes.append(
            f"the validation set changed since {len(losses)} checkpoint(s) were measured; measured them again "
            f"in {again.seconds:.1f} s (bits per byte: {figures})"
        )
    for entry in reg.resume_candidates(reg.with_evaluations(registry, val_sha256, losses), lineage, val_sha256):
        if entry.checkpoint_id in unusable:
            continue
        try:
            payload = best[2] if best is not None and best[1] == entry.checkpoint_id else (
                _load(store, entry, model_config, within, loaded))
        except (StoreError, ValueError) as exc:
            _skip(entry, exc, notes, unusable)
            continue
        return Resume(entry, payload), again
    skipped = reg.incompatible_count(registry, lineage)
    if skipped:
        notes.append(f"{skipped} stored checkpoint(s) have another model shape or tokenizer")
    return None, again


def _load(store: CheckpointStore, entry: reg.CheckpointEntry, model_config: ModelConfig, within: str,
          loaded: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The entry's payload, verified, and refused (ValueError) when its weights do not fit today's shape:
    the registry says what an entry is, but only the payload can be trusted to."""
    assert entry.storage is not None
    payload = loaded.get(entry.checkpoint_id) or load_state(store.get(entry.storage, within=within))
    check_model_config(payload, model_config)
    return payload


def _skip(entry: reg.CheckpointEntry, exc: Exception, notes: list[str], unusable: set[str]) -> None:
    unusable.add(entry.checkpoint_id)
    notes.append(f"skipped {entry.checkpoint_id}: {exc}")
    log.warning("checkpoint not usable", extra={"checkpoint": entry.checkpoint_id, "reason": str(exc)})


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
    reevaluation: Reevaluation = Reevaluation()
    unusable: frozenset[str] = frozenset()  # checkpoints whose objects failed to verify: retention drops them first
    initial_weights: dict[str, Any] | None = None  # init_from, a new lineage: where a fresh model starts
    data_oid: str | None = None  # the commit the text was read at, when not the head (a pull request's)
    migration: Migration | None = None  # a move to a new tokenizer this session tries (workers/session/migration.py)

    @property
    def data_commit(self) -> str:
        return self.data_oid or self.head.oid

    def migrated(self) -> SessionPlan:
        """The plan of the moved lineage: its text, network and fingerprint (it trains from the carried state,
        `migration.state`)."""
        assert self.migration is not None
        move = self.migration
        return replace(
            self, corpus=move.corpus, model_config=move.model_config, resume=None, initial_weights=None,
            fingerprint=fingerprint_of(move, move.corpus.fingerprint()), migration=None,
            reevaluation=Reevaluation(),  # figures on the old tokens' validation set: not this lineage's to record
        )


@dataclass(frozen=True)
class Target:
    """Where the session's progress goes: read before taking the run's lease, which needs the run's name."""

    config: RepoConfig
    run: str
    default_head: BranchHead
    branch: str | None
    pull_number: int | None = None  # a pull request's session: it commits nowhere (session.py `_evaluate_pull`)
    data_oid: str | None = None  # where the training text is read, when not at the head

    @property
    def lock_name(self) -> str:
        return run_lock_name(self.run, self.pull_number)

    async def head(self, repo: ProgressRepository) -> BranchHead:
        """The head of the branch the progress goes to (the default branch's is already read)."""
        if self.branch in (None, self.default_head.name):
            return self.default_head
        return await repo.head(self.branch)


async def locate(repo: ProgressRepository, request: SessionRequest) -> Target:
    default_head = await repo.head(None)
    config = parse_repo_config(await repo.read_file(CONFIG_PATH, default_head.oid))
    if request.profile not in config.profiles:
        raise SessionError(f"unknown profile `{request.profile}`; this repository has: {', '.join(config.profiles)}")
    run = config.run_name(request.profile)
    if request.pull_number is None:
        return Target(config, run, default_head, config.branch or request.branch)
    if not request.pull_head_sha:
        raise SessionError(f"pull request #{request.pull_number}: the request names no head commit")
    return Target(config, run, default_head, config.branch or request.branch, request.pull_number,
                  data_oid=request.pull_head_sha)


async def prepare(
    repo: ProgressRepository, store: CheckpointStore, request: SessionRequest, store_prefix: str, target: Target,
    *, max_snapshot_bytes: int = MAX_TOTAL_BYTES, pretrained: PretrainedSources = NOWHERE,
    training: TrainingOptions = DEFAULT_TRAINING,
) -> SessionPlan:
    """Read registry and training text at one commit; choose where training starts.

    Only the files `data.include` selects are read, and none when together they are over `max_snapshot_bytes`.
    """
    config, run = target.config, target.run
    head = await target.head(repo)
    profile = config.profiles[request.profile]
    registry, notes = reg.parse_registry(await repo.read_file(metadata_path(config, run), head.oid))
    history = parse_history(await repo.read_file(f"{config.progress_dir}/{run}/history.jsonl", head.oid))
    committed = committed_by(registry, history, request.session_id)
    run_folder = f"{store_prefix}/{run}"
    pending = await asyncio.to_thread(find_pending, store, run_folder, registry, notes)
    if target.pull_number is None:  # a branch's session also takes what merged pull requests trained
        pending = await with_merged_pulls(repo, store, run_folder, registry, head.name, pending, notes)
    registry = reg.merge(registry, {e.checkpoint_id: e for e in pending.entries})
    selected = selection(config.data.include, exclude_dirs=[config.progress_dir])
    files = await repo.files(target.data_oid or head.oid, selected, max_bytes=max_snapshot_bytes)
    unusable: set[str] = set()
    if profile.init_from:  # the pretrained model's network and tokenizer, so its context decides the split
        choice = await asyncio.to_thread(
            choose_base, store, registry, profile, pretrained, fresh=request.fresh, within=run_folder, notes=notes,
            unusable=unusable,
        )
        assert choice.model_config is not None
        model_config = replace(choice.model_config, dropout=profile.dropout)
        split = load_split(files, config, model_config.block_size)
    else:
        split = load_split(files, config, profile.block_size)
        choice = await asyncio.to_thread(
            choose_tokenizer, store, registry, profile, lambda vocab: shape_of(profile, vocab), split,
            fresh=request.fresh, within=run_folder, notes=notes, unusable=unusable,
        )
        model_config = model_config_for(profile, choice.tokenizer.vocab_size)
    corpus = await asyncio.to_thread(encode_corpus, split, choice.tokenizer, model_config.block_size)
    lineage = lineage_for(model_config, corpus.tokenizer.id)
    fingerprint = reg.Fingerprint(
        data_sha256=corpus.fingerprint(), tokenizer=corpus.tokenizer.id,
        model_config_sha256=reg.model_config_sha256(model_config.to_dict()), shape_sha256=lineage.shape_sha256,
        val_sha256=corpus.val_fingerprint(model_config.block_size),
        **({"base_model": profile.init_from} if profile.init_from else {}),
    )
    learnt_today = corpus.tokenizer.id.startswith(f"{BPE_KIND}:") and not choice.loaded and not profile.init_from
    reevaluation = Reevaluation()
    if request.fresh:
        resume = None
        notes.append(f"fresh start requested; the {len(registry)} earlier checkpoint(s) are kept")
    else:
        resume, reevaluation = await asyncio.to_thread(
            choose_resume, store, registry, model_config, corpus, profile.reevaluate, notes, run_folder, unusable,
            choice.loaded,
        )
        if resume is None and config.on_incompatible == "stop" and reg.incompatible_count(registry, lineage):
            raise SessionError(
                "every stored checkpoint has another model shape or tokenizer, and "
                f"`on_incompatible: stop` is set in {CONFIG_PATH}; start a fresh model explicitly to continue"
            )
        if resume is not None and resume.entry.fingerprint is not None and (
            resume.entry.fingerprint.data_sha256 != fingerprint.data_sha256
        ):
            notes.append(
                f"the training data (its text or its split) changed since {resume.entry.checkpoint_id}: continuing "
                "its weights and optimizer on today's data (a warm start; the sampler starts a new stream)"
            )
    if resume is not None:
        fingerprint = reg.Fingerprint.model_validate({**fingerprint.model_dump(), **carried(resume.entry)})
    elif learnt_today:
        fingerprint = reg.Fingerprint.model_validate({**fingerprint.model_dump(), TEXT_BYTES: len(split.train)})
    train_config = training.apply(train_config_for(profile, request.max_iters, request.session_id), profile,
                                  model_config.block_size, cuda=resolve_device("auto").type == "cuda")
    migration = None
    if resume is not None and target.pull_number is None:
        today = reevaluation.losses.get(resume.entry.checkpoint_id, reg.loss_on(resume.entry, fingerprint.val_sha256))
        proposed = await asyncio.to_thread(
            consider, profile, resume.entry, resume.state, corpus.tokenizer, model_config, split,
            train_config.max_iters, fresh=request.fresh, notes=notes, old_val_loss=today,
        )
        if isinstance(proposed, int):  # due, but the text cannot be encoded for it: remembered as declined
            fingerprint = declined(fingerprint, proposed)
        else:
            migration = proposed
    return SessionPlan(
        config=config, run=run, head=head, corpus=corpus, model_config=model_config,
        train_config=train_config, fingerprint=fingerprint,
        resume=resume, notes=notes, pending=pending, committed=committed, reevaluation=reevaluation,
        unusable=frozenset(unusable), initial_weights=choice.initial_weights if resume is None else None,
        data_oid=target.data_oid, migration=migration,
    )


async def with_merged_pulls(
    repo: ProgressRepository, store: CheckpointStore, run_folder: str, registry: reg.Registry, branch: str,
    pending: Pending, notes: list[str],
) -> Pending:
    numbers = await asyncio.to_thread(pull_numbers, store, run_folder)
    if not numbers:
        return pending
    try:
        merged = await repo.merged_into(numbers, branch)
    except PullsUnknown as exc:
        notes.append(f"could not tell which evaluated pull requests were merged ({exc}); their checkpoints wait")
        return pending
    taken = await asyncio.to_thread(find_merged_pulls, store, run_folder, registry, notes, merged)
    return Pending(pending.entries + taken.entries, pending.record_keys + taken.record_keys)


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


def load_split(files: dict[str, bytes], config: RepoConfig, block_size: int) -> SplitText:
    """The training and validation text of the files `data.include` selected (already read by path)."""
    if not files:
        raise SessionError(
            f"no training text: no file matches data.include {list(config.data.include)} in {CONFIG_PATH}"
        )
    try:
        return split_text(files, val_fraction=config.data.val_fraction, block_size=block_size)
    except ValueError as exc:
        raise SessionError(f"training text is not usable: {exc}") from exc


def encode_corpus(split: SplitText, tokenizer: Tokenizer, block_size: int) -> Corpus:
    try:
        return encode_split(split, tokenizer, block_size=block_size)
    except ValueError as exc:
        raise SessionError(f"training text is not usable: {exc}") from exc
