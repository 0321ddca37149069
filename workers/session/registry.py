"""The checkpoint registry (`metadata.json`): parse, choose, add, retain, dump. Pure: no I/O.

It reads files written by the seed workflow (entries without stored weights, scores dominated by
`tokens_processed`) and never chooses such an entry for resuming.

Compatibility is what the weights need: a checkpoint continues wherever its lineage (tokenizer and model
shape) matches, whatever the text became since; the data's fingerprint is kept as provenance. "Best"
means the lowest validation loss measured on today's validation set: each figure carries the
fingerprint of the set it was measured on (`val_sha256`), and figures on another set do not compare
(plan.choose_resume re-evaluates those first and records the result as the entry's `evaluation`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_serializer,
)


class StoredObject(BaseModel):
    """Which stored object holds a checkpoint's weights, and how to know they are intact.

    `key` is relative to the worker's own store root (`<owner>/<repo>/<run>/<checkpoint>.pt`): the
    repository names an object, never a location, so nothing about where the store is (or its
    credentials) is committed, and the store resolves the key only inside the run's own folder
    (store.CheckpointStore). `uri` is what builds before keys wrote; it is read only where it points into
    that same folder of this store.
    """

    model_config = ConfigDict(extra="allow")

    key: str | None = None
    uri: str | None = None
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)

    @model_serializer(mode="wrap")
    def _without_absent_names(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if not (k in ("key", "uri") and v is None)}


class Fingerprint(BaseModel):
    """Where a checkpoint came from: its data, tokenizer and model, and the validation set it was measured on.

    Only the tokenizer and the shape decide compatibility (see Lineage); entries written before
    `shape_sha256` and `val_sha256` existed lack them and are handled (shape from their model_config,
    their figure re-evaluated).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    data_sha256: str
    tokenizer: str
    model_config_sha256: str
    shape_sha256: str | None = None
    val_sha256: str | None = None


class Lineage(BaseModel):
    """What weights need to be continued: the same tokenizer and the same network shape."""

    model_config = ConfigDict(frozen=True)

    tokenizer: str
    shape_sha256: str


class Evaluation(BaseModel):
    """A later measurement of a checkpoint's weights, on the validation set named by `val_sha256`."""

    model_config = ConfigDict(extra="allow")

    val_sha256: str
    val_loss: float = Field(ge=0, allow_inf_nan=False)  # a cross-entropy: never negative


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
    evaluation: Evaluation | None = None

    @field_validator("evaluation", mode="wrap")
    @classmethod
    def _drop_bad_evaluation(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Evaluation | None:
        """A malformed figure is forgotten (the entry is measured again), never the entry and its weights."""
        try:
            return handler(value)
        except ValidationError:
            return None

    @property
    def restorable(self) -> bool:
        return self.storage is not None and self.val_loss is not None and math.isfinite(self.val_loss)

    @property
    def latest_loss(self) -> float:
        """Its most recent figure, on whatever set: for ordering when no figure on today's set exists."""
        loss = self.evaluation.val_loss if self.evaluation is not None else self.val_loss
        return loss if loss is not None and math.isfinite(loss) else math.inf


Registry = dict[str, CheckpointEntry]


SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "bias")  # not dropout: no weight depends on it


def model_config_sha256(model_config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(model_config), sort_keys=True).encode()).hexdigest()


DEFAULTS_OUTSIDE_THE_SHAPE = {"activation": "gelu"}  # part of the shape only when not the default, so lineages
# recorded before the key existed keep their shape


def shape_sha256(model_config: Mapping[str, Any]) -> str:
    """The network's shape: what decides whether weights load and compute what they were trained to."""
    shape = {k: model_config.get(k) for k in SHAPE_KEYS}
    for key, default in DEFAULTS_OUTSIDE_THE_SHAPE.items():
        if model_config.get(key, default) != default:
            shape[key] = model_config[key]
    return model_config_sha256(shape)


MIGRATED_FROM = "migrated_from"  # fingerprint extra: where a moved lineage came from (workers/session/migration.py)
MIGRATION_METHOD = "vocabulary transfer"  # each new token's embedding the mean of the old ones spelling its bytes
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,119}$")


def migration_origin(fingerprint: Fingerprint | None) -> dict[str, str] | None:
    """Where a moved lineage came from, when it has the shape a session writes: the registry is the
    repository's, so nothing else of it is shown or copied forward."""
    origin = (fingerprint.model_extra or {}).get(MIGRATED_FROM) if fingerprint is not None else None
    if isinstance(origin, dict) and set(origin) == {"checkpoint_id", "tokenizer", "method"} and (
            origin["method"] == MIGRATION_METHOD
            and all(isinstance(origin[k], str) and _PLAIN.match(origin[k]) for k in ("checkpoint_id", "tokenizer"))):
        return dict(origin)
    return None


def lineage_of(entry: CheckpointEntry) -> Lineage | None:
    """The entry's lineage; None when it does not say (the seed's entries), which matches nothing."""
    if entry.fingerprint is None:
        return None
    shape = entry.fingerprint.shape_sha256
    if shape is None:  # written before shapes were recorded: derive it from the entry's model_config
        model_config = (entry.model_extra or {}).get("model_config")
        if not isinstance(model_config, dict):
            return None
        shape = shape_sha256(model_config)
    return Lineage(tokenizer=entry.fingerprint.tokenizer, shape_sha256=shape)


def loss_on(entry: CheckpointEntry, val_sha256: str | None) -> float | None:
    """The entry's val loss on the validation set `val_sha256`, when it was measured there."""
    if val_sha256 is None:
        return None
    if entry.evaluation is not None and entry.evaluation.val_sha256 == val_sha256:
        return entry.evaluation.val_loss
    if entry.fingerprint is not None and entry.fingerprint.val_sha256 == val_sha256 and entry.restorable:
        return entry.val_loss
    return None


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


def _rank(entry: CheckpointEntry, val_sha256: str | None) -> tuple[bool, float, int, str]:
    """Figures on today's set first, lowest first; then the rest by their latest figure."""
    today = loss_on(entry, val_sha256)
    return (today is None, today if today is not None else entry.latest_loss, -entry.iteration, entry.checkpoint_id)


def resume_candidates(
    registry: Registry, lineage: Lineage | None, val_sha256: str | None = None
) -> list[CheckpointEntry]:
    """Restorable entries of this lineage (any, without one), best first (see _rank); callers fall back
    down the list."""
    usable = [e for e in registry.values() if e.restorable and (lineage is None or lineage_of(e) == lineage)]
    return sorted(usable, key=lambda e: _rank(e, val_sha256))


def to_reevaluate(registry: Registry, lineage: Lineage, val_sha256: str, budget: int) -> list[CheckpointEntry]:
    """The candidates not measured on today's validation set, best by their latest figure first, at most
    `budget` of them: what to measure before choosing."""
    unmeasured = [e for e in resume_candidates(registry, lineage, val_sha256) if loss_on(e, val_sha256) is None]
    return unmeasured[: max(budget, 0)]


def with_evaluations(registry: Registry, val_sha256: str, losses: Mapping[str, float]) -> Registry:
    """Record figures measured on today's set (checkpoint id -> val loss) on the entries still there."""
    out = dict(registry)
    for cid, loss in losses.items():
        if cid in out and math.isfinite(loss) and loss >= 0:
            out[cid] = out[cid].model_copy(update={"evaluation": Evaluation(val_sha256=val_sha256, val_loss=loss)})
    return out


def incompatible_count(registry: Registry, lineage: Lineage) -> int:
    """Restorable entries of another lineage: another model shape or tokenizer."""
    return sum(1 for e in registry.values() if e.restorable and lineage_of(e) != lineage)


def best_entry(registry: Registry, lineage: Lineage | None, val_sha256: str | None) -> CheckpointEntry | None:
    """What a later session of this lineage would resume from, on the figures known now."""
    return next(iter(resume_candidates(registry, lineage, val_sha256)), None)


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
    registry: Registry, max_checkpoints: int, *, pinned: str | None = None, lineage: Lineage | None = None,
    val_sha256: str | None = None, unusable: frozenset[str] = frozenset(),
) -> tuple[Registry, list[CheckpointEntry]]:
    """Keep the best `max_checkpoints` entries; what goes first: unrestorable entries (and `unusable` ones,
    whose objects this session found missing, corrupt or outside its run), then other lineages' (another
    shape or tokenizer), then this lineage's worst.

    Always kept, even past `max_checkpoints`: `pinned` (the session's own new entry, so a reply never names
    a checkpoint its own commit dropped) and the best entry of `lineage` (a regressed session never costs
    the lineage its best). Without a lineage every restorable entry counts as compatible.
    """
    best = best_entry({k: e for k, e in registry.items() if k not in unusable}, lineage, val_sha256)
    must = {cid for cid in (pinned, best.checkpoint_id if best else None) if cid in registry}
    max_checkpoints = max(max_checkpoints, len(must))

    def standing(e: CheckpointEntry) -> int:
        if not e.restorable or e.checkpoint_id in unusable:
            return 2
        return 0 if lineage is None or lineage_of(e) == lineage else 1

    ranked = sorted(
        registry.values(),
        key=lambda e: (
            e.checkpoint_id != pinned,
            best is None or e.checkpoint_id != best.checkpoint_id,
            standing(e),
            *_rank(e, val_sha256)[:3],
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
