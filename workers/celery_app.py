"""The Celery app: broker, queues and routing in one place, for the names in `app/queues.py`. Importing it
loads no torch.

Celery's CLI (`celery -A workers.celery_app worker`) needs a module-level app; it reads the broker URL
from the environment once, here.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Celery
from celery.signals import setup_logging
from kombu import Exchange, Queue

from app.config.settings import Settings
from app.log_setup import configure_logging
from app.queues import (
    EVENTS_QUEUE,
    EVENTS_TASK,
    RECOVER_ORPHANS_TASK,
    REDELIVER_TASK,
    SAMPLE_TASK,
    SCHEDULED_SESSION_TASK,
    SESSION_TASK,
    TRAIN_QUEUE,
)

# -- beat (celery-redbeat): entries live in Redis, so the events worker can add and remove them --------------
REDBEAT_KEY_PREFIX = "retrain:"  # entry keys: retrain:schedule:<owner>/<repo>:<n>; redbeat's own: retrain::*
REDELIVER_EVERY = timedelta(minutes=5)


def create_celery(settings: Settings) -> Celery:
    app = Celery("retrain", broker=settings.redis_url, include=["workers.tasks"])
    app.conf.update(
        # Each queue has its own exchange and routing key: with a shared default exchange, a task sent
        # to "train" would be routed by the default key and land on "events".
        task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in (EVENTS_QUEUE, TRAIN_QUEUE)],
        task_routes={
            EVENTS_TASK: {"queue": EVENTS_QUEUE}, SESSION_TASK: {"queue": TRAIN_QUEUE},
            SAMPLE_TASK: {"queue": TRAIN_QUEUE},
            SCHEDULED_SESSION_TASK: {"queue": EVENTS_QUEUE}, REDELIVER_TASK: {"queue": EVENTS_QUEUE},
            RECOVER_ORPHANS_TASK: {"queue": EVENTS_QUEUE},
        },
        task_default_queue=EVENTS_QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # Long GPU sessions, all in one place:
        # - acknowledge only when done, and hand an unfinished task back when its worker process dies
        #   (SIGKILL, OOM): the redelivered session resumes from its in-session checkpoint (workers/session/session.py);
        # - take one task at a time: a prefetched session would wait behind a long one on a busy GPU;
        # - the visibility timeout outlasts the longest allowed session (settings.max_session_s plus the
        #   hard-limit grace), or Redis would hand a running session to a second worker; broker and result
        #   backend alike, although results are ignored;
        # - time limits are per profile and set per message when the session is enqueued
        #   (workers/tasks.py): the soft one is the session's own deadline, which still commits,
        #   the hard one Celery's, which kills the process;
        # - the prefork parent never touches CUDA (workers/trainer/device.py resolves the device in the
        #   child, inside the task): a CUDA context does not survive fork.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # beat: `celery -A workers.celery_app beat -S redbeat.RedBeatScheduler` (see the Procfile)
        beat_scheduler="redbeat.RedBeatScheduler",
        redbeat_redis_url=settings.redis_url,
        redbeat_key_prefix=REDBEAT_KEY_PREFIX,
        redbeat_redis_options={},  # say so explicitly: broker_transport_options are the broker's, not beat's
        beat_schedule={
            "redeliver-failed-deliveries": {
                "task": REDELIVER_TASK, "schedule": REDELIVER_EVERY,
                # a run that waited longer than its interval is superseded by the next one
                "options": {"queue": EVENTS_QUEUE, "expires": REDELIVER_EVERY.total_seconds()},
            },
            "recover-orphaned-sessions": {
                "task": RECOVER_ORPHANS_TASK, "schedule": timedelta(seconds=settings.orphan_check_s),
                "options": {"queue": EVENTS_QUEUE, "expires": settings.orphan_check_s},
            },
        },
    )
    return app


@setup_logging.connect
def _logging(loglevel: int | str | None = None, **_: object) -> None:
    """Celery's processes log like the rest of Retrain: JSON lines with delivery and session ids, redacted."""
    level = logging.getLevelName(loglevel.upper()) if isinstance(loglevel, str) else (loglevel or logging.INFO)
    configure_logging(level, Settings().log_format)


celery_app = create_celery(Settings())
