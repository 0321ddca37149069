"""The model a repository serves: its profile's best checkpoint, read and verified, with its tokenizer.

Sampling, export and publishing all start here. "Best" is what the next session of the profile would
continue from on the figures the registry holds: the lowest val loss on the validation set the newest
checkpoint was measured on (re-measuring would need every training file; a session does that), among the
checkpoints of the profile's model shape and tokenizer kind. A checkpoint whose weights do not verify is
passed over for the next one, as sessions do.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from app.config.repo_config import RepoConfig
from app.errors import SessionError
from app.github.client import BranchHead
from workers.session import registry as reg
from workers.session.plan import SessionRequest, locate, metadata_path, shape_of
from workers.session.repos import ProgressRepository
from workers.session.store import CheckpointStore, StoreError
from workers.session.tokenizer_choice import continuable, read_checkpoint
from workers.trainer.model import ModelConfig
from workers.trainer.tokenizer import Tokenizer


@dataclass(frozen=True)
class BestModel:
    entry: reg.CheckpointEntry
    payload: dict[str, Any]
    model_config: ModelConfig
    tokenizer: Tokenizer
    config: RepoConfig
    profile: str
    run: str
    head: BranchHead
    registry: reg.Registry
    skipped: tuple[str, ...] = ()  # why better-ranked checkpoints were passed over

    def ancestry(self, limit: int = 100) -> list[reg.CheckpointEntry]:
        """The checkpoint and its parents, newest first, as far as the registry still holds them."""
        chain, seen, entry = [], set(), self.entry
        while entry is not None and entry.checkpoint_id not in seen and len(chain) < limit:
            chain.append(entry)
            seen.add(entry.checkpoint_id)
            entry = self.registry.get(entry.parent_checkpoint or "")
        return chain


async def load_best(
    repo: ProgressRepository, store: CheckpointStore, *, store_prefix: str, profile: str = "ci",
    branch: str | None = None,
) -> BestModel:
    """SessionError when the profile has no usable checkpoint yet (or its config is broken)."""
    target = await locate(repo, SessionRequest(session_id="best", profile=profile, branch=branch))
    config = target.config
    head = await target.head(repo)
    registry, _ = reg.parse_registry(await repo.read_file(metadata_path(config, target.run), head.oid))
    prof = config.profiles[profile]
    mine = continuable(registry, prof, lambda vocab: shape_of(prof, vocab))
    if not mine:
        others = sum(1 for e in registry.values() if e.restorable)
        raise SessionError(
            f"no checkpoint of profile `{profile}` (its tokenizer and model shape) on {head.name} yet"
            + (f"; {others} of other shapes or tokenizers" if others else "") + ": run a session first"
        )
    newest = max(mine, key=lambda e: (e.created_at or "", e.iteration))
    latest_set = newest.fingerprint.val_sha256 if newest.fingerprint else None
    skipped: list[str] = []
    for entry in reg.resume_candidates({e.checkpoint_id: e for e in mine}, None, latest_set):
        try:
            payload, tokenizer, model_config = await asyncio.to_thread(
                read_checkpoint, store, entry, f"{store_prefix}/{target.run}")
        except (StoreError, ValueError) as exc:
            skipped.append(f"{entry.checkpoint_id}: {exc}")
            continue
        return BestModel(entry, payload, model_config, tokenizer, config, profile, target.run, head, registry,
                         tuple(skipped))
    raise SessionError(f"no checkpoint of profile `{profile}` could be read: " + "; ".join(skipped[:3]))

