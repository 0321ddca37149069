"""Event routing as data: one planner per event, each a pure function of (delivery id, payload)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.features.check_runs import plan_check_run
from app.features.decisions import Decision, Ignore
from app.features.installations import plan_installation, plan_installation_repositories, plan_push
from app.features.retrain_command import plan_comment
from app.features.well_formed import problem
from app.features.workflows import plan_dispatch, plan_workflow_run

PLANNERS: dict[str, Callable[[str, dict[str, Any]], Decision]] = {
    "issue_comment": plan_comment,
    "workflow_dispatch": plan_dispatch,
    "workflow_run": plan_workflow_run,
    "check_run": plan_check_run,
    "installation": plan_installation,
    "installation_repositories": plan_installation_repositories,
    "push": plan_push,
}


def plan(event: str, delivery_id: str, payload: dict[str, Any]) -> Decision:
    """Never raises: a payload that is not what GitHub sends is ignored with the reason."""
    planner = PLANNERS.get(event)
    if planner is None:
        return Ignore(f"event {event} is not handled")
    if not isinstance(payload, dict):
        return Ignore(f"malformed {event} payload: not a JSON object")
    try:
        decision = planner(delivery_id, payload)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        return Ignore(f"malformed {event} payload: {type(exc).__name__}")
    found = problem(decision)
    return Ignore(f"malformed {event} payload: bad {found}") if found else decision
