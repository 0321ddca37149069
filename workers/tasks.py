"""Celery tasks: thin synchronous shells that run the async jobs with `asyncio.run`.

Each worker process keeps one token cache, so consecutive tasks for an installation reuse its token.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import redis
from celery.signals import worker_init

from app.config.repo_config import CONFIG_PATH, parse_repo_config
from app.config.settings import Settings
from app.errors import ConfigError
from app.features.decisions import Origin, StartTraining
from app.github.auth import EVENTS_PERMISSIONS, TokenCache
from app.github.client import installation_client
from app.log_setup import bound
from app.queues import (
    EVENTS_TASK,
    RECOVER_ORPHANS_TASK,
    REDELIVER_TASK,
    SAMPLE_TASK,
    SCHEDULED_SESSION_TASK,
    SESSION_TASK,
    TRAIN_QUEUE,
)
from app.telemetry import TELEMETRY
from app.telemetry import configure as configure_telemetry
from workers.celery_app import celery_app
from workers.coordination.approvals import PullApprovals
from workers.coordination.budget import SessionBudgets
from workers.coordination.drain import Drain
from workers.coordination.live import LiveSession, LiveSessions
from workers.coordination.live import for_url as live_for_url
from workers.coordination.losses import WorkerLosses
from workers.coordination.orphans import SessionMessages, recover_orphans
from workers.coordination.run_lock import RunBusy, RunLocks
from workers.coordination.run_queue import RunQueue
from workers.coordination.starts import SessionStarts
from workers.jobs.events import Admission, EnqueueSession, Feedback, handle_event, start, wait_before_retry_s
from workers.jobs.redelivery import redeliver_failed
from workers.jobs.schedules import ScheduleStore, schedule_specs

log = logging.getLogger(__name__)
configure_telemetry(Settings().redis_url)  # workers report into Redis; the receiver's /metrics shows it
TOKENS = TokenCache()
SCHEDULES = ScheduleStore(celery_app)


@functools.cache
def live_sessions(redis_url: str) -> LiveSessions:
    return live_for_url(redis_url)


def enqueue_session(message: dict[str, Any], recoveries: int = 0) -> None:
    """Record the session as queued (for `/retrain status`) and keep its message (for workers/coordination/orphans.py),
    then hand it to the train queue with its hard time limit: the profile's soft limit (capped by
    settings.max_session_s) plus the grace in which a session out of time evaluates, stores and commits."""
    settings = Settings()
    session_messages(settings.redis_url, settings.visibility_timeout_s).remember(message, recoveries)
    message = dict(message)
    soft = min(float(message.pop("time_limit_s", settings.max_session_s)), settings.max_session_s)
    origin, request = message["origin"], message["request"]
    live_sessions(settings.redis_url).put(origin["repo"], LiveSession(
        request["session_id"], request["profile"], "queued", request["trigger"], request["sender"],
        max_iters=request["max_iters"], check_url=message.get("check_url"),
    ))
    celery_app.send_task(SESSION_TASK, kwargs={**message, "time_limit_s": soft}, queue=TRAIN_QUEUE,
                         time_limit=soft + settings.hard_limit_grace_s)


def enqueue_sample(message: dict[str, Any]) -> None:
    """A `/retrain sample` goes to a train worker, bounded by its own time limit (settings.sample_time_limit_s)."""
    limit = Settings().sample_time_limit_s
    celery_app.send_task(SAMPLE_TASK, kwargs=message, queue=TRAIN_QUEUE, soft_time_limit=limit,
                         time_limit=limit + 30)


@celery_app.task(name=EVENTS_TASK, bind=True, max_retries=None)
def handle_event_task(self: Any, event: str, delivery_id: str, payload: dict[str, Any]) -> str:
    """Carried out again, with backoff, after a transient GitHub or Redis failure (workers/jobs/events.py
    `wait_before_retry_s`), at most `settings.event_retries` times, and only while nothing was done that a
    second go would repeat; then it fails loudly, logged with the delivery it loses."""
    settings = Settings()
    acted: list[str] = []
    with bound(delivery_id=delivery_id, event=event):
        try:
            outcome = asyncio.run(
                handle_event(settings, event, delivery_id, payload, enqueue_session, TOKENS, schedules=SCHEDULES,
                             live=live_sessions(settings.redis_url), admission=admission(settings), acted=acted,
                             enqueue_sample=enqueue_sample)
            )
        except Exception as exc:
            wait = wait_before_retry_s(exc, self.request.retries, settings.event_retry_s)
            if wait is not None and not acted and self.request.retries < settings.event_retries:
                log.warning("delivery %s (%s) failed (%s); trying again in %.0fs (%d of %d)", delivery_id, event,
                            type(exc).__name__, wait, self.request.retries + 1, settings.event_retries)
                raise self.retry(countdown=wait, exc=exc) from exc
            TELEMETRY.count("retrain_events_failed_total", event=event)
            log.error("delivery %s (%s) failed for good after %d attempt(s)%s: %s", delivery_id, event,
                      self.request.retries + 1, f" (already done: {', '.join(acted)})" if acted else "",
                      type(exc).__name__, exc_info=True)
            raise
        log.info("delivery %s (%s): %s", delivery_id, event, outcome)
    return outcome


@celery_app.task(name=SCHEDULED_SESSION_TASK, bind=True)
def scheduled_session_task(self: Any, installation_id: int, repo: str, profile: str, cron: str) -> str:
    """Fired by a repository's cron entry (workers/jobs/schedules.py). The task id names the firing, so a
    redelivered message names the same session."""
    with bound(delivery_id=f"schedule-{self.request.id}", repo=repo):
        outcome = asyncio.run(run_scheduled_session(
            Settings(), installation_id, repo, profile, cron, firing=f"schedule-{self.request.id}",
            enqueue=enqueue_session, store=SCHEDULES, tokens=TOKENS,
        ))
        log.info("schedule %r of %s (%s): %s", cron, repo, profile, outcome)
    return outcome


@celery_app.task(name=RECOVER_ORPHANS_TASK)
def recover_orphans_task() -> str:
    settings = Settings()
    sent = recover_orphans(
        redis.Redis.from_url(settings.redis_url), session_messages(settings.redis_url, settings.visibility_timeout_s),
        enqueue_session, quiet_for_s=settings.orphan_after_s,
    )
    return f"sent {len(sent)} orphaned session(s) again"


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
            specs = schedule_specs(repo, config, settings.limits)
        except ConfigError:
            specs = None  # an invalid schedule: the last valid one keeps serving
        if specs is not None and (cron, profile) not in {(s.cron, s.profile) for s in specs}:
            # The schedule changed and its push was missed (a lost delivery): catch up, run nothing.
            with store.lock(repo):
                store.replace(installation_id, repo, specs)
            return f"ignored: {cron!r} ({profile}) is no longer in {CONFIG_PATH}; entries refreshed"
        return await start(gh, feedback, config, StartTraining(origin, profile), enqueue, admission(settings))


@celery_app.task(name=SESSION_TASK, bind=True, max_retries=None)
def train_session_task(
    self: Any, origin: dict[str, Any], request: dict[str, Any], check_run_id: int | None = None,
    check_url: str | None = None, run: str | None = None, time_limit_s: float | None = None,
) -> str:
    """`check_url` is for `/retrain status`, recorded when the session was queued; `run` names the
    (repository, run) queue slot the session leaves when it ends; `time_limit_s` is the soft limit it was
    sent with, what it asks of the installation's budget.

    While another session holds the run this task comes back every `busy_retry_s` (a Celery retry keeps
    its id, arguments and time limit)."""
    from workers.jobs.train_job import Coordination, run_github_session
    from workers.session.session import (  # the training stack: see preload_training
        SessionPaused,
        SessionRequest,
        TrainingProcessLost,
    )

    settings = Settings()
    drain = Drain(redis.Redis.from_url(settings.redis_url), self.request.hostname or "")
    ids = {"session_id": request.get("session_id"), "delivery_id": request.get("delivery_id"),
           "repo": origin.get("repo")}
    losses = WorkerLosses(redis.Redis.from_url(settings.redis_url), settings.visibility_timeout_s)
    with bound(**ids):
        lost = losses.started(request["session_id"])  # counted down again below on any way out Python sees
        came_back = True
        try:
            return asyncio.run(run_github_session(
                settings, Origin(**origin), SessionRequest(**request), check_run_id, tokens=TOKENS,
                coordination=Coordination(
                    live_sessions(settings.redis_url), run_locks(settings.redis_url, settings.lock_ttl_s),
                    run_queue(settings.redis_url, settings.visibility_timeout_s),
                    session_messages(settings.redis_url, settings.visibility_timeout_s),
                    budgets(settings.redis_url, settings.gpu_seconds_per_day),
                    session_starts(settings.redis_url, settings.delivery_ttl_s),
                ),
                queue_slot=run, first_attempt=self.request.retries == 0, draining=drain.requested,
                worker_losses=lost, wanted_s=time_limit_s, check_url=check_url,
            ))
        except RunBusy as busy:
            raise self.retry(countdown=settings.busy_retry_s, exc=busy) from busy
        except TrainingProcessLost as gone:  # a rank died: again from the in-session checkpoint, counted as a loss
            came_back = False
            raise self.retry(countdown=settings.busy_retry_s, exc=gone) from gone
        except SessionPaused as paused:  # this worker is shutting down: another one continues
            raise self.retry(countdown=0, exc=paused) from paused
        finally:
            if came_back:
                losses.returned(request["session_id"])


@celery_app.task(name=SAMPLE_TASK)
def sample_text_task(origin: dict[str, Any], profile: str, prompt: str) -> str:
    from workers.jobs.sample_job import run_sample  # the training stack: see preload_training

    with bound(delivery_id=origin.get("delivery_id"), repo=origin.get("repo")):
        outcome = asyncio.run(run_sample(Settings(), Origin(**origin), profile, prompt, tokens=TOKENS))
        log.info("sample for %s#%s: %s", origin.get("repo"), origin.get("issue_number"), outcome)
    return outcome


@worker_init.connect
def preload_training(sender: Any = None, **_: object) -> None:
    """Only a worker that consumes the train queue loads torch and the trainer, once, in its parent: each
    pool process forked for a session then starts with it loaded. The events worker and beat stay small.
    (Importing torch initialises no CUDA; see tests/test_routing.py.)"""
    consumed = getattr(getattr(sender, "app", None), "amqp", None)
    queues = set(consumed.queues.consume_from or ()) if consumed is not None else set()
    if TRAIN_QUEUE in queues:
        import workers.jobs.train_job  # noqa: F401


@functools.cache
def run_locks(redis_url: str, ttl_s: float) -> RunLocks:
    return RunLocks(redis.Redis.from_url(redis_url), ttl_s)


@functools.cache
def session_messages(redis_url: str, ttl_s: int) -> SessionMessages:
    return SessionMessages(redis.Redis.from_url(redis_url), ttl_s)


def admission(settings: Settings) -> Admission:
    return Admission(
        session_starts(settings.redis_url, settings.delivery_ttl_s), settings.limits,
        budgets(settings.redis_url, settings.gpu_seconds_per_day),
        run_queue(settings.redis_url, settings.visibility_timeout_s),
        PullApprovals(redis.Redis.from_url(settings.redis_url)),
    )


@functools.cache
def session_starts(redis_url: str, remember_s: int) -> SessionStarts:
    return SessionStarts(redis.Redis.from_url(redis_url), remember_s)


@functools.cache
def budgets(redis_url: str, per_day_s: float) -> SessionBudgets:
    return SessionBudgets(redis.Redis.from_url(redis_url), per_day_s)


@functools.cache
def run_queue(redis_url: str, stale_after_s: float) -> RunQueue:
    return RunQueue.for_url(redis_url, stale_after_s)
