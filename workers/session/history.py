"""`history.jsonl`: one line per session, append-only, and the source of the loss chart and `/retrain history`.
Pure, and free of the training stack (the facts' type is only named), so the events worker reads it too."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from workers.session.registry import migration_origin

if TYPE_CHECKING:
    from workers.session.progress import SessionFacts

CURVE_POINTS = 50  # per session; enough for a chart, small enough for a diff


def downsample(losses: list[float], start_iteration: int, points: int = CURVE_POINTS) -> list[list[float]]:
    """[iteration, loss] pairs: the mean of each of `points` equal stretches of the session."""
    if not losses:
        return []
    size = max(1, -(-len(losses) // points))
    out = []
    for i in range(0, len(losses), size):
        chunk = losses[i : i + size]
        out.append([start_iteration + i + len(chunk), round(sum(chunk) / len(chunk), 5)])
    return out


def history_line(facts: SessionFacts) -> dict[str, Any]:
    origin = migration_origin(facts.fingerprint)
    moved = origin is not None and origin["checkpoint_id"] == facts.parent_checkpoint  # this session moved it
    return {
        "session": facts.session_id,
        "checkpoint_id": facts.checkpoint_id,
        "profile": facts.profile,
        "trigger": facts.trigger,
        "finished_at": facts.finished_at.isoformat(),
        "start_iteration": facts.start_iteration,
        "end_iteration": facts.end_iteration,
        "val_bpb_before": facts.val_bpb_before,
        "val_bpb_after": facts.val_bpb_after,
        "val_loss_before": facts.val_loss_before,
        "val_loss_after": facts.val_loss_after,
        "unigram_val_loss": facts.unigram_val_loss,
        "resumed_from": facts.parent_checkpoint,
        "tokenizer": facts.fingerprint.tokenizer,
        **({"moved_from_tokenizer": origin["tokenizer"]} if moved and origin is not None else {}),
        "train_loss_curve": [list(p) for p in facts.loss_curve],
    }


def parse_history(raw: bytes | None) -> list[dict[str, Any]]:
    """The sessions recorded so far; a line that is not a JSON object is skipped, never fatal."""
    sessions = []
    for line in (raw or b"").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            sessions.append(item)
    return sessions


def appended(raw: bytes | None, line: dict[str, Any]) -> bytes:
    """The history with the session's line at its end, once: a line the same session wrote before (a
    commit that landed without its answer) is not written twice."""
    if line.get("session") is not None and any(old.get("session") == line["session"] for old in parse_history(raw)):
        return raw or b""
    existing = raw or b""
    if existing and not existing.endswith(b"\n"):
        existing += b"\n"
    return existing + json.dumps(line, sort_keys=True).encode() + b"\n"
