"""The last check between a payload and the workers: a decision made from a hostile or broken payload must
carry ids and names of the right kinds, or nothing downstream may act on it (no GitHub call with a
made-up repository, no session with a string for an installation id)."""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

from app.features.decisions import Decision, Origin, RemoveSchedules, StartTraining, SyncSchedules

REPO_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$")
SHA = re.compile(r"^[0-9a-f]{40}$")
MAX_TEXT = 10_000


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63


def _origin_problem(origin: Origin) -> str | None:
    if not isinstance(origin.repo, str) or not REPO_NAME.match(origin.repo):
        return "repository name"
    if not _positive_int(origin.installation_id):
        return "installation id"
    for name in ("issue_number", "comment_id"):
        value = getattr(origin, name)
        if value is not None and not _positive_int(value):
            return name.replace("_", " ")
    for name in ("sender", "delivery_id", "line", "ref", "workflow", "trigger", "event_key", "signed_at"):
        value = getattr(origin, name)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
            return name
    if origin.head_sha is not None and (not isinstance(origin.head_sha, str) or not SHA.match(origin.head_sha)):
        return "head sha"
    return None


def problem(decision: Decision) -> str | None:
    """What is malformed in a decision, or None when it is fit to act on."""
    if isinstance(decision, SyncSchedules | RemoveSchedules):
        if not _positive_int(decision.installation_id):
            return "installation id"
        if not all(isinstance(r, str) and REPO_NAME.match(r) for r in decision.repos):
            return "repository name"
        return None
    origin = next((getattr(decision, f.name) for f in fields(decision) if f.name == "origin"), None)
    if origin is not None and (found := _origin_problem(origin)):
        return found
    if isinstance(decision, StartTraining):
        if not isinstance(decision.profile, str) or not decision.profile:
            return "profile"
        for name in ("max_iters", "max_checkpoints"):
            value = getattr(decision, name)
            if value is not None and not _positive_int(value):
                return name
    return None
