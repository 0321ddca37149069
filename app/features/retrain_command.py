"""`/retrain` in an issue or pull-request comment. `plan` decides from the payload alone (no I/O); the
events task carries the decision out (permission check, reaction, enqueue, reply).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.commands import InvalidCommand, find_command


@dataclass(frozen=True)
class CommentContext:
    """Where the command was typed and by whom: enough to react, reply and start a session."""

    repo: str
    installation_id: int
    issue_number: int
    comment_id: int
    sender: str
    line: str


@dataclass(frozen=True)
class StartTraining:
    context: CommentContext
    profile: str
    max_iters: int | None


@dataclass(frozen=True)
class RejectCommand:
    context: CommentContext
    reason: str


@dataclass(frozen=True)
class Ignore:
    reason: str


Plan = StartTraining | RejectCommand | Ignore
DEFAULT_PROFILE = "ci"


def plan(event: str, payload: dict[str, Any]) -> Plan:
    if event != "issue_comment":
        return Ignore(f"event {event} is not handled")
    if payload.get("action") != "created":
        return Ignore("only new comments run commands; edits and deletions do not")
    comment = payload.get("comment") or {}
    sender = payload.get("sender") or {}
    if sender.get("type") == "Bot" or (comment.get("user") or {}).get("type") == "Bot":
        return Ignore("comments by bots (this App included) never run commands")
    parsed = find_command(str(comment.get("body") or ""))
    if parsed is None:
        return Ignore("no /retrain command in the comment")
    try:
        context = CommentContext(
            repo=str(payload["repository"]["full_name"]),
            installation_id=int(payload["installation"]["id"]),
            issue_number=int(payload["issue"]["number"]),
            comment_id=int(comment["id"]),
            sender=str(sender["login"]),
            line=parsed.line,
        )
    except (KeyError, TypeError, ValueError):
        return Ignore("payload lacks the repository, installation, issue, comment or sender")
    if isinstance(parsed, InvalidCommand):
        return RejectCommand(context, parsed.reason)
    return StartTraining(context, parsed.profile or DEFAULT_PROFILE, parsed.max_iters)
