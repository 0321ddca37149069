"""Poison pills: a session whose worker process dies every time (killed for memory, past its hard time
limit) would be handed back by Celery and run again forever. Each start of a session's task is counted up,
and each way out that Python sees (done, failed, waiting for its run, paused) counts it down again, so what
the count holds at a start is how many earlier starts never came back: the times a worker was lost.
"""

from __future__ import annotations

import logging

import redis

log = logging.getLogger(__name__)

LOSSES_KEY = "retrain:starts:{session_id}"


class WorkerLosses:
    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self._redis = client
        self._ttl_s = ttl_s

    def started(self, session_id: str) -> int:
        """Count this start; returns how many earlier starts of the session never came back."""
        key = LOSSES_KEY.format(session_id=session_id)
        try:
            with self._redis.pipeline() as pipe:
                pipe.incr(key)
                pipe.expire(key, self._ttl_s)
                count, _ = pipe.execute()
        except redis.RedisError:  # the session's own Redis calls will say what is wrong
            log.warning("could not count the start of session %s", session_id, exc_info=True)
            return 0
        return int(count) - 1

    def returned(self, session_id: str) -> None:
        """This start came back: it was not a loss."""
        try:
            self._redis.decr(LOSSES_KEY.format(session_id=session_id))
        except redis.RedisError:  # the count expires; never hide the session's own outcome behind this
            log.warning("could not count the return of session %s", session_id, exc_info=True)
