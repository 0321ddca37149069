"""Local mode: the workers' session pipeline against a git checkout on disk (`retrain train`, `retrain demo`),
and what a person does with the result there (`retrain sample`, `retrain export`)."""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from app.config.settings import Settings
from workers.session.best import BestModel, load_best
from workers.session.export import write_export
from workers.session.pretrained import PretrainedSources
from workers.session.progress_log import local_progress
from workers.session.repos import LocalGitRepository
from workers.session.session import Controls, SessionRequest, SessionResult, run_session
from workers.session.store import CheckpointStore
from workers.session.training_options import DEFAULT_TRAINING, TrainingOptions
from workers.trainer.baseline import perplexity
from workers.trainer.data import bits_per_byte


def store_prefix_for(repo: LocalGitRepository) -> str:
    """Two checkouts with the same folder name must not share checkpoints."""
    return f"local/{repo.name}-{hashlib.sha256(str(repo.path).encode()).hexdigest()[:8]}"


async def run_local_session(
    path: Path, *, profile: str, max_iters: int | None, fresh: bool, store_url: str,
    say: Callable[[str], None] = print, training: TrainingOptions = DEFAULT_TRAINING,
) -> SessionResult:
    repo = LocalGitRepository(path)
    repo.remember_store(store_url)
    request = SessionRequest(
        session_id=uuid.uuid4().hex, profile=profile, max_iters=max_iters, trigger="local",
        sender=getpass.getuser(), fresh=fresh,
    )
    controls = Controls(on_progress=local_progress(say, request.session_id),
                        pretrained=PretrainedSources(anywhere=True),  # whoever runs local mode is the operator
                        training=training)
    return await run_session(repo, CheckpointStore(store_url), request, store_prefix=store_prefix_for(repo),
                             controls=controls)


def local_training(settings: Settings, nproc: int | None) -> TrainingOptions:
    """The worker settings (RETRAIN_*) of whoever runs local mode, with `--nproc-per-node` over them."""
    options = TrainingOptions.from_settings(settings)
    return options if nproc is None else replace(options, nproc=nproc)


async def local_best(path: Path, *, profile: str, store_url: str | None, default_store: str) -> BestModel:
    """The profile's best checkpoint in a local checkout, from the store its sessions used."""
    repo = LocalGitRepository(path)
    store = CheckpointStore(store_url or repo.remembered_store() or default_store)
    return await load_best(repo, store, store_prefix=store_prefix_for(repo), profile=profile)


async def export_local(path: Path, out: Path, *, profile: str, store_url: str | None, default_store: str
                       ) -> tuple[BestModel, Path]:
    """`retrain export`: the profile's best checkpoint as a Hugging Face folder at `out`."""
    best = await local_best(path, profile=profile, store_url=store_url, default_store=default_store)
    return best, await asyncio.to_thread(write_export, best, out, source=str(path.resolve()))


def describe_result(result: SessionResult) -> str:
    f = result.facts
    origin = f"resumed from {f.parent_checkpoint}" if f.parent_checkpoint else "started from a fresh model"
    lines = [
        f"{f.profile} session: {f.iterations} iterations ({f.start_iteration} → {f.end_iteration}), {origin}",
        f"  first step loss {f.first_loss:.4f}, last step loss {f.last_loss:.4f}",
        f"  val {f.val_bpb_before:.4f} → {f.val_bpb_after:.4f} bits per byte"
        f" (loss {f.val_loss_before:.4f} → {f.val_loss_after:.4f} nats, perplexity {perplexity(f.val_loss_after):.2f});"
        f" unigram baseline {bits_per_byte(f.unigram_val_loss):.4f} bits per byte",
        f"  {f.tokens_per_s:,.0f} tokens/s on {f.device}" + (f", {f.world_size} processes" if f.world_size > 1 else ""),
        f"  checkpoint {f.checkpoint_id} stored as {f.storage.key}",
        f"  committed {result.commit_oid[:12]} on {result.branch}: {f.run_dir}/cache/metadata.json",
        *(f"  note: {n}" for n in f.notes),
    ]
    return "\n".join(lines)
