"""Graceful shutdown for GPU workers: on SIGTERM (a deploy, a node drain, `honcho` stopping) the worker's
running session saves an in-session checkpoint and hands itself back to the queue, instead of either
training on for hours (Celery's warm shutdown waits for the task) or being killed with nothing saved.

SIGTERM reaches the worker's parent process only, and the session trains in a pool process; Celery's
`worker_shutting_down` signal (in the parent) leaves a flag in Redis under the worker's node name, which
the session polls at its progress reports. A worker that starts again clears its own flag.
"""

from __future__ import annotations

import logging

import redis
from celery.signals import worker_ready, worker_shutting_down

from app.config.settings import Settings

log = logging.getLogger(__name__)
DRAIN_KEY = "retrain:draining:{hostname}"
DRAIN_TTL_S = 24 * 3600


class Drain:
    def __init__(self, client: redis.Redis, hostname: str) -> None:
        self._redis = client
        self._key = DRAIN_KEY.format(hostname=hostname)

    def request(self) -> None:
        self._redis.set(self._key, "1", ex=DRAIN_TTL_S)

    def clear(self) -> None:
        self._redis.delete(self._key)

    def requested(self) -> bool:
        try:
            return bool(self._redis.exists(self._key))
        except redis.RedisError:  # Redis away: keep training
            return False


@worker_shutting_down.connect
def _on_shutting_down(sender: str, sig: str, how: str, exitcode: int, **_: object) -> None:
    log.warning("worker %s shutting down (%s, %s): running sessions save and go back to the queue", sender, sig, how)
    try:
        Drain(redis.Redis.from_url(Settings().redis_url), sender).request()
    except redis.RedisError:
        log.warning("could not reach Redis to ask running sessions to stop", exc_info=True)


@worker_ready.connect
def _on_ready(sender: object, **_: object) -> None:
    hostname = getattr(sender, "hostname", None)
    if hostname:
        try:
            Drain(redis.Redis.from_url(Settings().redis_url), hostname).clear()
        except redis.RedisError:
            log.warning("could not clear the drain flag of %s", hostname, exc_info=True)
