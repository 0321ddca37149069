"""Tasks land on the queue their workers consume, checked in a real Redis broker."""

from __future__ import annotations

import redis

from app.settings import Settings
from workers.celery_app import EVENTS_QUEUE, EVENTS_TASK, SESSION_TASK, TRAIN_QUEUE, create_celery


def test_each_task_is_delivered_to_its_own_queue(redis_url: str, clean_redis: redis.Redis) -> None:
    app = create_celery(Settings(redis_url=redis_url, _env_file=None))
    app.send_task(SESSION_TASK, kwargs={"context": {}, "request": {}})
    app.send_task(SESSION_TASK, kwargs={"context": {}, "request": {}}, queue=TRAIN_QUEUE)
    app.send_task(EVENTS_TASK, args=("ping", "d", {}))
    app.send_task(EVENTS_TASK, args=("ping", "d", {}), queue=EVENTS_QUEUE)
    assert clean_redis.llen(TRAIN_QUEUE) == 2
    assert clean_redis.llen(EVENTS_QUEUE) == 2
