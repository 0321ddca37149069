"""`/retrain` in an issue or pull-request comment: decided from the payload alone (no I/O)."""

from __future__ import annotations

from typing import Any

from app.features.commands import (
    ApproveCommand,
    CancelCommand,
    HelpCommand,
    HistoryCommand,
    InvalidCommand,
    SampleCommand,
    StatusCommand,
    find_command,
)
from app.features.decisions import (
    CancelSessions,
    Decision,
    Ignore,
    Origin,
    RejectCommand,
    SampleText,
    ShowHelp,
    ShowHistory,
    ShowStatus,
    StartTraining,
)

DEFAULT_PROFILE = "ci"


def plan_comment(delivery_id: str, payload: dict[str, Any]) -> Decision:
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
        origin = Origin(
            repo=str(payload["repository"]["full_name"]),
            installation_id=int(payload["installation"]["id"]),
            trigger="issue_comment",
            sender=str(sender["login"]),
            delivery_id=delivery_id,
            issue_number=int(payload["issue"]["number"]),
            pull_number=int(payload["issue"]["number"]) if payload["issue"].get("pull_request") else None,
            comment_id=int(comment["id"]),
            line=parsed.line,
            event_key=f"issue_comment:{payload['repository']['full_name']}:{int(comment['id'])}",
            signed_at=comment.get("created_at"),
        )
    except (KeyError, TypeError, ValueError):
        return Ignore("payload lacks the repository, installation, issue, comment or sender")
    if isinstance(parsed, InvalidCommand):
        return RejectCommand(origin, parsed.reason)
    if isinstance(parsed, HelpCommand):
        return ShowHelp(origin)
    if isinstance(parsed, StatusCommand):
        return ShowStatus(origin)
    if isinstance(parsed, CancelCommand):
        return CancelSessions(origin)
    if isinstance(parsed, ApproveCommand):
        if origin.pull_number is None:
            return RejectCommand(origin, "`/retrain ok-to-test` approves a pull request; this is an issue")
        return StartTraining(origin, DEFAULT_PROFILE, approve=True, approve_sha=parsed.sha)
    if isinstance(parsed, HistoryCommand):
        return ShowHistory(origin)
    if isinstance(parsed, SampleCommand):
        return SampleText(origin, parsed.profile or DEFAULT_PROFILE, parsed.prompt)
    return StartTraining(origin, parsed.profile or DEFAULT_PROFILE, parsed.max_iters, fresh=parsed.fresh)
