"""Celery tasks: thin synchronous shells that run the async jobs with `asyncio.run`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app import replies
from app.errors import RetrainError
from app.features.retrain_command import CommentContext
from app.github import installation_client
from app.settings import Settings
from workers.celery_app import EVENTS_TASK, SESSION_TASK, TRAIN_QUEUE, celery_app
from workers.events import handle_event
from workers.progress_log import ProgressLogger
from workers.repos import GitHubRepository
from workers.session import SessionRequest, run_session
from workers.store import CheckpointStore

log = logging.getLogger(__name__)


@celery_app.task(name=EVENTS_TASK)
def handle_event_task(event: str, delivery_id: str, payload: dict[str, Any]) -> str:
    def enqueue_session(message: dict[str, Any]) -> None:
        celery_app.send_task(SESSION_TASK, kwargs=message, queue=TRAIN_QUEUE)

    outcome = asyncio.run(handle_event(Settings(), event, delivery_id, payload, enqueue_session))
    log.info("delivery %s (%s): %s", delivery_id, event, outcome)
    return outcome


@celery_app.task(name=SESSION_TASK)
def train_session_task(context: dict[str, Any], request: dict[str, Any]) -> str:
    return asyncio.run(run_github_session(Settings(), CommentContext(**context), SessionRequest(**request)))


async def run_github_session(settings: Settings, ctx: CommentContext, request: SessionRequest) -> str:
    """Train, commit, and tell the requester how it went, whatever happened."""
    store = CheckpointStore(settings.store_url)
    async with installation_client(settings, ctx.installation_id) as gh:
        repo = GitHubRepository(gh, ctx.repo)
        try:
            result = await run_session(
                repo, store, request, store_prefix=ctx.repo, on_progress=ProgressLogger(log, request.session_id)
            )
        except RetrainError as exc:
            await gh.create_comment(ctx.repo, ctx.issue_number, replies.failed(ctx, str(exc)))
            return f"session {request.session_id} not run: {exc}"
        except Exception:
            log.exception("session %s failed", request.session_id)
            await gh.create_comment(ctx.repo, ctx.issue_number, replies.crashed(ctx, request.session_id))
            raise
        facts = result.facts
        await gh.create_comment(
            ctx.repo,
            ctx.issue_number,
            replies.finished(
                ctx, profile=facts.profile, iterations=facts.iterations, start=facts.start_iteration,
                end=facts.end_iteration, val_before=facts.val_loss_before, val_after=facts.val_loss_after,
                resumed_from=facts.parent_checkpoint, checkpoint_id=facts.checkpoint_id,
                commit_oid=result.commit_oid,
            ),
        )
    return f"session {request.session_id} committed {result.commit_oid}"
