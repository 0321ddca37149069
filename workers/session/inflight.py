"""In-session checkpoints: what a session has trained so far, saved to the store every few minutes, so that
a redelivered session (its worker was killed) continues from there instead of from its start.

One object per session, `<repo>/<run>/inflight/<session id>.pt`: a resumable payload (see
trainer/checkpoint.py) with a `session` section holding what the finished session will need to describe
itself (where it started, where it ends, its parent, its losses so far). It is deleted once the session's
commit has landed. The store writes by rename, so a kill during a save leaves the previous one intact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from workers.session.store import CheckpointStore
from workers.trainer.checkpoint import load_state, save_state


def inflight_key(run_prefix: str, session_id: str) -> str:
    return f"{run_prefix}/inflight/{session_id}.pt"


@dataclass(frozen=True)
class SessionSoFar:
    """Plain values only: they travel inside a weights-only checkpoint."""

    start_iteration: int  # where the session started, before any interruption
    target_iteration: int  # where it ends when nothing stops it
    parent_checkpoint: str | None
    val_loss_before: float
    started_at: str
    losses: list[float]  # every iteration's training loss since start_iteration
    resumed_times: int = 0
    spent_s: float = 0.0  # time this session's earlier deliveries spent, counted against its time limit


@dataclass(frozen=True)
class InFlight:
    state: dict[str, Any]  # resumable payload at iteration start_iteration + len(so_far.losses)
    so_far: SessionSoFar


def save_inflight(store: CheckpointStore, key: str, state: dict[str, Any], so_far: SessionSoFar) -> None:
    store.put(key, save_state({**state, "session": asdict(so_far)}))


def load_inflight(store: CheckpointStore, key: str) -> InFlight | None:
    """The in-session checkpoint, None when there is none; ValueError when it cannot be used."""
    blob = store.read(key)
    if blob is None:
        return None
    payload = load_state(blob)
    try:
        so_far = SessionSoFar(**payload.pop("session"))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"in-session checkpoint {key} has no usable session section: {exc}") from exc
    done = int(payload["iteration"]) - so_far.start_iteration
    if done != len(so_far.losses) or not so_far.start_iteration <= payload["iteration"] <= so_far.target_iteration:
        raise ValueError(f"in-session checkpoint {key} is inconsistent (iteration {payload['iteration']})")
    return InFlight(payload, so_far)
