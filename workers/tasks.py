"""Celery tasks: thin synchronous shells that run the async jobs with `asyncio.run`.

Each worker process keeps one token cache, so consecutive tasks for an installation reuse its token.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.errors import RetrainError
from app.features.decisions import Origin
from app.github import installation_client
from app.github_auth import SESSION_PERMISSIONS, TokenCache
from app.settings import Settings
from workers.celery_app import EVENTS_TASK, SESSION_TASK, TRAIN_QUEUE, celery_app
from workers.events import handle_event
from workers.progress_log import ProgressLogger
from workers.reporting import SessionReporter
from workers.repos import GitHubRepository
from workers.session import SessionRequest, run_session
from workers.store import CheckpointStore
from workers.trainer.train import Progress

log = logging.getLogger(__name__)
TOKENS = TokenCache()


@celery_app.task(name=EVENTS_TASK)
def handle_event_task(event: str, delivery_id: str, payload: dict[str, Any]) -> str:
    def enqueue_session(message: dict[str, Any]) -> None:
        celery_app.send_task(SESSION_TASK, kwargs=message, queue=TRAIN_QUEUE)

    outcome = asyncio.run(handle_event(Settings(), event, delivery_id, payload, enqueue_session, TOKENS))
    log.info("delivery %s (%s): %s", delivery_id, event, outcome)
    return outcome


@celery_app.task(name=SESSION_TASK)
def train_session_task(origin: dict[str, Any], request: dict[str, Any], check_run_id: int | None = None) -> str:
    return asyncio.run(run_github_session(Settings(), Origin(**origin), SessionRequest(**request), check_run_id))


async def run_github_session(
    settings: Settings, origin: Origin, request: SessionRequest, check_run_id: int | None
) -> str:
    """Train, commit, and tell the requester how it went, whatever happened."""
    store = CheckpointStore(settings.store_url)
    async with installation_client(
        settings, origin.installation_id, repo=origin.repo, permissions=SESSION_PERMISSIONS, tokens=TOKENS
    ) as gh:
        reporter = SessionReporter(
            gh, origin, check_run_id=check_run_id, profile=request.profile, session_id=request.session_id,
            web_url=settings.web_url,
        )
        progress_log = ProgressLogger(log, request.session_id)

        def on_progress(p: Progress) -> None:
            progress_log(p)
            reporter.on_progress(p)

        await reporter.started()
        try:
            result = await run_session(
                GitHubRepository(gh, origin.repo), store, request, store_prefix=origin.repo, on_progress=on_progress
            )
        except RetrainError as exc:
            await reporter.failed(str(exc))
            return f"session {request.session_id} not run: {exc}"
        except Exception:
            log.exception("session %s failed", request.session_id)
            await reporter.crashed()
            raise
        await reporter.finished(result)
    return f"session {request.session_id} committed {result.commit_oid}"
