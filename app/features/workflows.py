"""Sessions from GitHub Actions: `workflow_dispatch` with the seed workflow's inputs, and `workflow_run`
events of scheduled runs. Either counts only for workflows listed in the repository config (checked by
the events task, which reads the config)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

from app.config.repo_config import MAX_KEPT_CHECKPOINTS
from app.features.decisions import Decision, Ignore, Origin, RejectCommand, StartTraining

FRESH_CONFIRMATION = "I CONFIRM FRESH START"
SCHEDULED_PROFILE = "scheduled"


def _truthy(value: Any) -> bool:
    """Workflow inputs arrive as strings ("true") or booleans, depending on the input's type."""
    return value is True or str(value).strip().lower() in {"true", "1", "yes"}


def _positive_int(inputs: dict[str, Any], name: str, most: int | None = None) -> int | None:
    value = inputs.get(name)
    if value in (None, ""):
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"input `{name}` must be a whole number, got {value!r}") from None
    if number < 1:
        raise ValueError(f"input `{name}` must be at least 1, got {number}")
    if most is not None and number > most:
        raise ValueError(f"input `{name}` must be at most {most:,}, got {number:,}")
    return number


def _origin(trigger: str, delivery_id: str, payload: dict[str, Any], ref: str | None, head_sha: str | None,
            workflow: str, event_key: str) -> Origin:
    return Origin(
        repo=str(payload["repository"]["full_name"]), installation_id=int(payload["installation"]["id"]),
        trigger=trigger, sender=(payload.get("sender") or {}).get("login"), delivery_id=delivery_id,
        ref=ref, head_sha=head_sha, workflow=workflow, event_key=event_key,
    )


def dispatch_key(payload: dict[str, Any]) -> str:
    """A dispatch event carries no id of its own, so its identity is its whole signed body: the same inputs
    at the same repository state (`repository.pushed_at` moves with every push, progress commits included)
    are the same request."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"workflow_dispatch:{hashlib.sha256(canonical.encode()).hexdigest()}"


def plan_dispatch(delivery_id: str, payload: dict[str, Any]) -> Decision:
    try:
        ref = str(payload.get("ref") or "")
        origin = _origin("workflow_dispatch", delivery_id, payload, ref.removeprefix("refs/heads/") or None, None,
                         str(payload["workflow"]), dispatch_key(payload))
    except (KeyError, TypeError, ValueError):
        return Ignore("payload lacks the repository, installation or workflow")
    if ref.startswith("refs/tags/"):  # a tag is no branch to commit progress to: said on the default branch
        tag = ref.removeprefix("refs/tags/")
        return RejectCommand(replace(origin, ref=None), f"the workflow was run on the tag `{tag}`; Retrain trains "
                             "and commits to a branch: run the workflow on a branch")
    inputs = payload.get("inputs") or {}
    if not isinstance(inputs, dict):
        return RejectCommand(origin, "workflow inputs must be an object")
    profile = str(inputs.get("training_type") or "ci").strip()
    fresh = _truthy(inputs.get("force_fresh_start"))
    if fresh and inputs.get("confirm_fresh_start") != FRESH_CONFIRMATION:
        return RejectCommand(
            origin, f"`force_fresh_start` needs `confirm_fresh_start` set to \"{FRESH_CONFIRMATION}\""
        )
    try:
        max_iters = _positive_int(inputs, "max_iters")
        max_checkpoints = _positive_int(inputs, "max_checkpoints", most=MAX_KEPT_CHECKPOINTS)
    except ValueError as exc:
        return RejectCommand(origin, str(exc))
    return StartTraining(origin, profile, max_iters, fresh=fresh, max_checkpoints=max_checkpoints)


def plan_workflow_run(delivery_id: str, payload: dict[str, Any]) -> Decision:
    run = payload.get("workflow_run") or {}
    if payload.get("action") != "requested" or run.get("event") != "schedule":
        return Ignore("only scheduled workflow runs, when requested, start sessions")
    try:
        origin = replace(
            _origin("workflow_run", delivery_id, payload, run.get("head_branch"), run.get("head_sha"),
                    str(run["path"]), f"workflow_run:{int(run['id'])}:{int(run.get('run_attempt') or 1)}"),
            signed_at=run.get("created_at"),
        )
    except (KeyError, TypeError, ValueError):
        return Ignore("payload lacks the repository, installation or workflow path")
    return StartTraining(origin, SCHEDULED_PROFILE)
