"""Celery tasks: thin synchronous shells that run the async jobs with `asyncio.run`.

Each worker process keeps one token cache, so consecutive tasks for an installation reuse its token.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.errors import ConfigError, RetrainError
from app.features.decisions import Origin, StartTraining
from app.github import installation_client
from app.github_auth import EVENTS_PERMISSIONS, SESSION_PERMISSIONS, TokenCache
from app.repo_config import CONFIG_PATH, parse_repo_config
from app.settings import Settings
from workers.celery_app import (
    EVENTS_TASK,
    REDELIVER_TASK,
    SCHEDULED_SESSION_TASK,
    SESSION_TASK,
    TRAIN_QUEUE,
    celery_app,
)
from workers.events import EnqueueSession, Feedback, handle_event, start
from workers.progress_log import ProgressLogger
from workers.redelivery import redeliver_failed
from workers.reporting import SessionReporter
from workers.repos import GitHubRepository
from workers.schedules import ScheduleStore, schedule_specs
from workers.session import SessionRequest, run_session
from workers.store import CheckpointStore
from workers.trainer.train import Progress

log = logging.getLogger(__name__)
TOKENS = TokenCache()
SCHEDULES = ScheduleStore(celery_app)


def enqueue_session(message: dict[str, Any]) -> None:
    celery_app.send_task(SESSION_TASK, kwargs=message, queue=TRAIN_QUEUE)


@celery_app.task(name=EVENTS_TASK)
def handle_event_task(event: str, delivery_id: str, payload: dict[str, Any]) -> str:
    outcome = asyncio.run(
        handle_event(Settings(), event, delivery_id, payload, enqueue_session, TOKENS, schedules=SCHEDULES)
    )
    log.info("delivery %s (%s): %s", delivery_id, event, outcome)
    return outcome


@celery_app.task(name=SCHEDULED_SESSION_TASK, bind=True)
def scheduled_session_task(self: Any, installation_id: int, repo: str, profile: str, cron: str) -> str:
    """Fired by a repository's cron entry (workers/schedules.py). The task id names the firing, so a
    redelivered message names the same session."""
    outcome = asyncio.run(run_scheduled_session(
        Settings(), installation_id, repo, profile, cron, firing=f"schedule-{self.request.id}",
        enqueue=enqueue_session, store=SCHEDULES, tokens=TOKENS,
    ))
    log.info("schedule %r of %s (%s): %s", cron, repo, profile, outcome, extra={"repo": repo})
    return outcome


@celery_app.task(name=REDELIVER_TASK)
def redeliver_failed_task() -> str:
    asked = asyncio.run(redeliver_failed(Settings()))
    return f"asked for {len(asked)} redeliveries"


async def run_scheduled_session(
    settings: Settings, installation_id: int, repo: str, profile: str, cron: str, *, firing: str,
    enqueue: EnqueueSession, store: ScheduleStore, tokens: TokenCache | None = None,
) -> str:
    """What the events task does for a StartTraining, with the schedule as the trigger: a queued check run on
    the default branch and the session enqueued."""
    origin = Origin(repo=repo, installation_id=installation_id, trigger="schedule", delivery_id=firing)
    async with installation_client(
        settings, installation_id, repo=repo, permissions=EVENTS_PERMISSIONS, tokens=tokens
    ) as gh:
        feedback = Feedback(gh, origin)
        try:
            config = parse_repo_config(await gh.read_file(repo, CONFIG_PATH, None))
        except ConfigError as exc:
            await feedback.problem(str(exc), str(exc))
            return "not run: invalid repository config"
        try:
            specs = schedule_specs(repo, config)
        except ConfigError:
            specs = None  # an invalid schedule: the last valid one keeps serving
        if specs is not None and (cron, profile) not in {(s.cron, s.profile) for s in specs}:
            # The schedule changed and its push was missed (a lost delivery): catch up, run nothing.
            with store.lock(repo):
                store.replace(installation_id, repo, specs)
            return f"ignored: {cron!r} ({profile}) is no longer in {CONFIG_PATH}; entries refreshed"
        return await start(gh, feedback, config, StartTraining(origin, profile), enqueue)


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
