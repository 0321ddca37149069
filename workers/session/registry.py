"""The checkpoint registry (`metadata.json`): parse, choose, add, retain, dump. Pure: no I/O.

It reads files written by the seed workflow (entries without stored weights, scores dominated by
`tokens_processed`) and never chooses such an entry for resuming: best means lowest validation loss
among entries whose weights are stored and whose fingerprint matches this session's data and model.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class StoredObject(BaseModel):
    """Where a checkpoint's weights are and how to know they are intact."""

    model_config = ConfigDict(extra="allow")

    uri: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class Fingerprint(BaseModel):
    """What must match for a checkpoint to be resumable: the data bytes, the tokenizer, the model shape."""

    model_config = ConfigDict(extra="allow", frozen=True)

    data_sha256: str
    tokenizer: str
    model_config_sha256: str


class CheckpointEntry(BaseModel):
    """One `metadata.json` entry; unknown (seed) fields are kept as they are."""

    model_config = ConfigDict(extra="allow")

    checkpoint_id: str
    created_at: str | None = None
    iteration: int = 0
    val_loss: float | None = None
    train_loss: float | None = None
    parent_checkpoint: str | None = None
    storage: StoredObject | None = None
    fingerprint: Fingerprint | None = None

    @property
    def restorable(self) -> bool:
        return self.storage is not None and self.val_loss is not None and math.isfinite(self.val_loss)


Registry = dict[str, CheckpointEntry]


def model_config_sha256(model_config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(model_config), sort_keys=True).encode()).hexdigest()


def quality_score(val_loss: float) -> float:
    """Kept for seed compatibility, derived from validation loss alone (higher is better)."""
    return 1.0 / (1.0 + val_loss)


def parse_registry(raw: bytes | str | None) -> tuple[Registry, list[str]]:
    """Entries that parse, and one message per entry (or file) that does not. Never raises on bad input."""
    if raw is None:
        return {}, []
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return {}, [f"metadata.json is not valid JSON ({exc}); starting a new registry"]
    if not isinstance(data, dict):
        return {}, ["metadata.json is not a JSON object keyed by checkpoint id; starting a new registry"]
    registry: Registry = {}
    problems: list[str] = []
    for key, value in data.items():
        if not isinstance(value, dict):
            problems.append(f"entry {key!r} is not an object; skipped")
            continue
        try:
            entry = CheckpointEntry.model_validate({"checkpoint_id": key, **value})
        except ValidationError as exc:
            problems.append(f"entry {key!r} is malformed ({exc.error_count()} problems); skipped")
            continue
        registry[key] = entry
    return registry, problems


def resume_candidates(registry: Registry, fingerprint: Fingerprint) -> list[CheckpointEntry]:
    """Restorable, compatible entries, best (lowest val loss) first; callers fall back down the list."""
    usable = [e for e in registry.values() if e.restorable and e.fingerprint == fingerprint]
    return sorted(usable, key=lambda e: (e.val_loss, -e.iteration, e.checkpoint_id))


def incompatible_count(registry: Registry, fingerprint: Fingerprint) -> int:
    """Restorable entries that cannot be resumed because the data, tokenizer or model shape changed."""
    return sum(1 for e in registry.values() if e.restorable and e.fingerprint != fingerprint)


def with_entry(registry: Registry, entry: CheckpointEntry) -> Registry:
    return {**registry, entry.checkpoint_id: entry}


def merge(ours: Registry, theirs: Registry) -> Registry:
    """Union by checkpoint id, for two sessions that read the same registry and committed in turn.

    An id present in both is the same checkpoint; the copy that records stored weights wins, so a merge
    never makes a restorable checkpoint unrestorable.
    """
    merged = {**ours, **theirs}
    for cid, entry in ours.items():
        if entry.restorable and not merged[cid].restorable:
            merged[cid] = entry
    return merged


def retain(
    registry: Registry, max_checkpoints: int, *, pinned: str | None = None
) -> tuple[Registry, list[CheckpointEntry]]:
    """Keep the best `max_checkpoints` entries, dropping unrestorable ones, then the worst, first.

    `pinned` (the session's own new entry) is always kept, so a session's reply never names a checkpoint
    that its own commit dropped.
    """
    ranked = sorted(
        registry.values(),
        key=lambda e: (
            e.checkpoint_id != pinned,
            not e.restorable,
            e.val_loss if e.val_loss is not None else math.inf,
            -e.iteration,
        ),
    )
    kept, dropped = ranked[:max_checkpoints], ranked[max_checkpoints:]
    kept_ids = {e.checkpoint_id for e in kept}
    return {k: v for k, v in registry.items() if k in kept_ids}, dropped


def dump_registry(registry: Registry) -> bytes:
    """Stable output (entries in creation order, sorted keys inside) so diffs stay readable."""
    ordered = sorted(registry.values(), key=lambda e: (e.created_at or "", e.checkpoint_id))
    data = {e.checkpoint_id: e.model_dump(mode="json", exclude_none=False) for e in ordered}
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
