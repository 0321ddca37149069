"""Metrics that worker processes contribute (sessions, training speed and loss, GitHub API calls and rate
limits), kept in Redis so that one scrape of the receiver's `/metrics` sees the whole deployment, however
many worker machines there are and however short-lived their processes (a GPU worker forks a process per
session). The receiver's own series (deliveries, enqueue latency) live in its process (app/web/metrics.py).

Recording is best effort: a metric never fails a session. Until `configure()` runs (in worker processes)
nothing is recorded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import redis

log = logging.getLogger(__name__)
COUNTERS_KEY = "retrain:metrics:counters"
GAUGES_KEY = "retrain:metrics:gauges"


def field(name: str, labels: dict[str, str]) -> str:
    return json.dumps([name, sorted((k, str(v)) for k, v in labels.items())])


def parse_field(raw: str | bytes) -> tuple[str, dict[str, str]]:
    name, labels = json.loads(raw)
    return str(name), {str(k): str(v) for k, v in labels}


class Telemetry:
    def __init__(self, client: redis.Redis | None = None) -> None:
        self._redis = client

    def count(self, name: str, by: float = 1.0, **labels: str) -> None:
        if self._redis is not None:
            self._quietly(lambda r: r.hincrbyfloat(COUNTERS_KEY, field(name, labels), by))

    def gauge(self, name: str, value: float, **labels: str) -> None:
        if self._redis is not None:
            self._quietly(lambda r: r.hset(GAUGES_KEY, field(name, labels), value))

    def _quietly(self, write: Callable[[redis.Redis], object]) -> None:
        try:
            write(self._redis)
        except redis.RedisError as exc:
            log.debug("metric not recorded: %s", exc)


TELEMETRY = Telemetry()


def configure(redis_url: str) -> None:
    """Record into this Redis from now on (each worker process calls it once)."""
    TELEMETRY._redis = redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)
