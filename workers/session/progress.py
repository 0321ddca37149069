"""What a session writes into the repository: the registry entry, `training_summary.json` and the commit
message. Pure functions of the session's facts; the seed's field names are kept so old readers still work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from workers.session.registry import (
    CheckpointEntry,
    Fingerprint,
    Lineage,
    Registry,
    StoredObject,
    best_entry,
    quality_score,
)
from workers.trainer.baseline import perplexity
from workers.trainer.data import bits_per_byte


@dataclass(frozen=True)
class SessionFacts:
    """Everything known about a finished training session, before it is committed."""

    session_id: str
    profile: str
    run: str
    progress_dir: str
    trigger: str
    sender: str | None
    delivery_id: str | None
    started_at: datetime
    finished_at: datetime
    parent_checkpoint: str | None
    start_iteration: int
    end_iteration: int
    train_loss: float
    val_loss_before: float
    val_loss_after: float
    unigram_val_loss: float
    first_loss: float
    last_loss: float
    learning_rate: float
    tokens_per_s: float
    mfu: float | None
    device: str
    tokens_processed: int
    model_config: dict[str, Any]
    training_config: dict[str, Any]
    data_config: dict[str, Any]
    storage: StoredObject
    fingerprint: Fingerprint
    notes: tuple[str, ...] = field(default_factory=tuple)
    loss_curve: tuple[tuple[int, float], ...] = ()  # downsampled training loss of this session, nats per byte
    stopped: str | None = None  # why it ended before max_iters: STOPPED_ON_REQUEST or STOPPED_AT_TIME_LIMIT
    evaluations: dict[str, float] = field(default_factory=dict)  # earlier checkpoints measured on today's val set
    reevaluation_s: float = 0.0  # the time those measurements took
    data_commit: str | None = None  # the commit whose text the session trained on
    sample: str = ""  # a few lines the new weights wrote, for the report (empty when writing them failed)
    world_size: int = 1  # training processes (one per GPU) the session ran on

    @property
    def val_bpb_before(self) -> float:
        return bits_per_byte(self.val_loss_before)

    @property
    def val_bpb_after(self) -> float:
        return bits_per_byte(self.val_loss_after)

    @property
    def lineage(self) -> Lineage | None:
        shape = self.fingerprint.shape_sha256
        return Lineage(tokenizer=self.fingerprint.tokenizer, shape_sha256=shape) if shape else None

    @property
    def iterations(self) -> int:
        return self.end_iteration - self.start_iteration

    @property
    def checkpoint_id(self) -> str:
        return checkpoint_id(self.finished_at, self.end_iteration, self.session_id)

    @property
    def run_dir(self) -> str:
        return f"{self.progress_dir}/{self.run}"


STOPPED_ON_REQUEST = "cancelled"
STOPPED_AT_TIME_LIMIT = "time limit"
_FACTS = TypeAdapter(SessionFacts)


def dump_facts(facts: SessionFacts) -> bytes:
    """A finished session's facts, kept in the store until its commit lands (a redelivery commits them)."""
    return _FACTS.dump_json(facts)


def load_facts(raw: bytes) -> SessionFacts:
    try:
        return _FACTS.validate_json(raw)
    except ValidationError as exc:
        raise ValueError(f"session facts record is not valid: {exc.error_count()} problem(s)") from exc


def checkpoint_id(finished_at: datetime, iteration: int, session_id: str) -> str:
    """Seed-shaped id (`ckpt_<date>_<time>_<iteration>_…`), unique per session."""
    return f"ckpt_{finished_at:%Y%m%d_%H%M%S}_{iteration}_{session_id[:8]}"


def new_entry(facts: SessionFacts) -> CheckpointEntry:
    return CheckpointEntry.model_validate(
        {
            "checkpoint_id": facts.checkpoint_id,
            "created_at": facts.finished_at.isoformat(),
            "iteration": facts.end_iteration,
            "epoch": 0,
            "train_loss": facts.train_loss,
            "val_loss": facts.val_loss_after,
            "learning_rate": facts.learning_rate,
            "model_config": facts.model_config,
            "training_config": facts.training_config,
            "data_config": facts.data_config,
            "metrics": {
                "val_loss": facts.val_loss_after,
                "val_bpb": facts.val_bpb_after,
                "val_perplexity": perplexity(facts.val_loss_after),
                "val_loss_before": facts.val_loss_before,
                "unigram_val_loss": facts.unigram_val_loss,
                "tokens_processed": facts.tokens_processed,
                "tokens_per_s": facts.tokens_per_s,
                "mfu": facts.mfu,
                "device": facts.device,
                "world_size": facts.world_size,
            },
            "tags": [facts.profile, facts.trigger],
            "parent_checkpoint": facts.parent_checkpoint,
            "notes": "; ".join(facts.notes) or f"{facts.profile} session of {facts.iterations} iterations",
            "file_size_mb": facts.storage.bytes / 2**20,
            "quality_score": quality_score(facts.val_loss_after),
            "storage": facts.storage.model_dump(),
            "fingerprint": facts.fingerprint.model_dump(),
            "session": {
                "id": facts.session_id,
                "trigger": facts.trigger,
                "sender": facts.sender,
                "delivery_id": facts.delivery_id,
                "started_at": facts.started_at.isoformat(),
                "finished_at": facts.finished_at.isoformat(),
                "start_iteration": facts.start_iteration,
                **({"data_commit": facts.data_commit} if facts.data_commit else {}),
            },
        }
    )


def summary(facts: SessionFacts, registry: Registry) -> dict[str, Any]:
    """`training_summary.json`: the seed's shape, plus the session's own before/after figures."""
    restorable = [e for e in registry.values() if e.restorable]
    best = best_entry(registry, facts.lineage, facts.fingerprint.val_sha256)
    sizes = [e.storage.bytes for e in restorable if e.storage is not None]
    return {
        "workflow_run": facts.session_id,
        "training_type": facts.run_dir,
        "completed_at": facts.finished_at.isoformat(),
        "parameters": {
            "profile": facts.profile,
            "max_iters": facts.iterations,
            "batch_size": facts.training_config.get("batch_size"),
            "learning_rate": facts.training_config.get("learning_rate"),
            "model_layers": facts.model_config.get("n_layer"),
            "model_embedding": facts.model_config.get("n_embd"),
            "force_fresh_start": False,
        },
        "cache_stats": {
            "total_checkpoints": len(registry),
            "restorable_checkpoints": len(restorable),
            "total_size_mb": sum(sizes) / 2**20,
            "best_val_loss": best.val_loss if best else None,
            "best_quality_score": quality_score(best.val_loss) if best and best.val_loss is not None else None,
            "cache_dir": f"{facts.run_dir}/cache",
        },
        "best_checkpoint": None
        if best is None
        else {"id": best.checkpoint_id, "val_loss": best.val_loss,
              "val_bpb": bits_per_byte(best.val_loss) if best.val_loss is not None else None,
              "latest_val_bpb": bits_per_byte(best.latest_loss), "iteration": best.iteration,
              "created_at": best.created_at},
        "session": {
            "id": facts.session_id,
            "trigger": facts.trigger,
            "sender": facts.sender,
            "checkpoint_id": facts.checkpoint_id,
            "resumed_from": facts.parent_checkpoint,
            "start_iteration": facts.start_iteration,
            "end_iteration": facts.end_iteration,
            "iterations": facts.iterations,
            "val_bpb_before": facts.val_bpb_before,
            "val_bpb_after": facts.val_bpb_after,
            "unigram_val_bpb": bits_per_byte(facts.unigram_val_loss),
            "val_loss_before": facts.val_loss_before,
            "val_loss_after": facts.val_loss_after,
            "val_perplexity": perplexity(facts.val_loss_after),
            "unigram_val_loss": facts.unigram_val_loss,
            "validation_set": facts.fingerprint.val_sha256,
            "reevaluated": {
                "checkpoints": {cid: bits_per_byte(loss) for cid, loss in facts.evaluations.items()},
                "seconds": facts.reevaluation_s,
            },
            "first_loss": facts.first_loss,
            "last_loss": facts.last_loss,
            "tokens_per_s": facts.tokens_per_s,
            "mfu": facts.mfu,
            "device": facts.device,
            "world_size": facts.world_size,
            "elapsed_s": (facts.finished_at - facts.started_at).total_seconds(),
            "notes": list(facts.notes),
        },
    }


def commit_message(facts: SessionFacts) -> tuple[str, str]:
    """(headline, body): what a person scanning `git log` wants to know."""
    headline = (
        f"retrain({facts.profile}): +{facts.iterations} iters to {facts.end_iteration}, "
        f"val {facts.val_bpb_before:.4f} → {facts.val_bpb_after:.4f} bits/byte"
    )
    lines = [
        f"Trigger: {facts.trigger}" + (f" by @{facts.sender}" if facts.sender else ""),
        f"Checkpoint: {facts.checkpoint_id}",
        f"Resumed from: {facts.parent_checkpoint or 'a fresh model'}",
        f"Session: {facts.session_id}",
        *facts.notes,
    ]
    return headline, "\n".join(lines)


def to_json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def utcnow() -> datetime:
    return datetime.now(UTC)
