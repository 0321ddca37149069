"""The Celery app: broker, queues and routing in one place. Importing it loads no torch, so the web
process can enqueue by task name without the training stack.

Celery's CLI (`celery -A workers.celery_app worker`) needs a module-level app; it reads the broker URL
from the environment once, here.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from app.settings import Settings

EVENTS_QUEUE = "events"
TRAIN_QUEUE = "train"
EVENTS_TASK = "retrain.handle_event"
SESSION_TASK = "retrain.train_session"


def create_celery(settings: Settings) -> Celery:
    app = Celery("retrain", broker=settings.redis_url, include=["workers.tasks"])
    app.conf.update(
        # Each queue has its own exchange and routing key: with a shared default exchange, a task sent
        # to "train" would be routed by the default key and land on "events".
        task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in (EVENTS_QUEUE, TRAIN_QUEUE)],
        task_routes={EVENTS_TASK: {"queue": EVENTS_QUEUE}, SESSION_TASK: {"queue": TRAIN_QUEUE}},
        task_default_queue=EVENTS_QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # A session may run for hours on a GPU: acknowledge only when done, take one task at a time,
        # and hand an unfinished task back if its worker dies.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": 12 * 3600},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


celery_app = create_celery(Settings())
