"""The events worker's job: carry out what `app.features` decided — check permission, react, reply,
and enqueue a training session. Runs on the CPU `events` queue; fast, no training stack.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from app import replies
from app.errors import ConfigError
from app.features.retrain_command import Ignore, RejectCommand, StartTraining, plan
from app.github import installation_client
from app.repo_config import CONFIG_PATH, parse_repo_config
from app.settings import Settings

log = logging.getLogger(__name__)
SESSION_NAMESPACE = uuid.UUID("0b5e3c59-8d0f-4d2b-9a55-2f1f8b6f6a10")

EnqueueSession = Callable[[dict[str, Any]], None]


def session_id_for(delivery_id: str) -> str:
    """Stable per delivery, so a redelivered or retried events task names the same session."""
    return uuid.uuid5(SESSION_NAMESPACE, delivery_id).hex


async def handle_event(
    settings: Settings, event: str, delivery_id: str, payload: dict[str, Any], enqueue_session: EnqueueSession
) -> str:
    """The outcome in a few words (logged by the task)."""
    decision = plan(event, payload)
    if isinstance(decision, Ignore):
        return f"ignored: {decision.reason}"
    ctx = decision.context
    async with installation_client(settings, ctx.installation_id) as gh:
        if isinstance(decision, RejectCommand):
            await gh.add_reaction(ctx.repo, ctx.comment_id, "confused")
            await gh.create_comment(ctx.repo, ctx.issue_number, replies.rejected(ctx, decision.reason))
            return "rejected: malformed command"
        assert isinstance(decision, StartTraining)
        permission = await gh.permission(ctx.repo, ctx.sender)
        try:
            config = parse_repo_config(await gh.read_file(ctx.repo, CONFIG_PATH, None))
        except ConfigError as exc:
            await gh.create_comment(ctx.repo, ctx.issue_number, replies.failed(ctx, str(exc)))
            return "rejected: invalid repository config"
        if not config.allows(permission):
            await gh.create_comment(ctx.repo, ctx.issue_number, replies.refused(ctx, permission, config.permission))
            return f"refused: {ctx.sender} has {permission}"
        if decision.profile not in config.profiles:
            reason = f"unknown profile `{decision.profile}`; valid profiles: {', '.join(sorted(config.profiles))}"
            await gh.create_comment(ctx.repo, ctx.issue_number, replies.rejected(ctx, reason))
            return "rejected: unknown profile"
        await gh.add_reaction(ctx.repo, ctx.comment_id, "eyes")
    session_id = session_id_for(delivery_id)
    enqueue_session(
        {
            "context": {
                "repo": ctx.repo, "installation_id": ctx.installation_id, "issue_number": ctx.issue_number,
                "comment_id": ctx.comment_id, "sender": ctx.sender, "line": ctx.line,
            },
            "request": {
                "session_id": session_id, "profile": decision.profile, "max_iters": decision.max_iters,
                "trigger": "issue_comment", "sender": ctx.sender, "delivery_id": delivery_id,
            },
        }
    )
    return f"enqueued session {session_id}"
