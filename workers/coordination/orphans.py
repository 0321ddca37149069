"""Sessions whose whole worker vanished (a preempted spot machine, a node lost): nobody hands their task
back. Celery requeues a task at once only when the pool process dies under a living worker; when the
worker itself is gone, the Redis transport restores its unacknowledged message only after the visibility
timeout, which must outlast the longest session (hours). This periodic check finds such sessions sooner
and sends their message again; the redelivered session resumes its in-session checkpoint.

Orphaned means: shown as running, quiet for `quiet_for_s`, and its run's lease gone (its heartbeat has
stopped). A session that is still alive holds its lease, so it is never sent twice while it runs; and a
second delivery of one session is harmless anyway (it waits for the lease, then finds its commit).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import redis

from workers.coordination.live import SESSIONS_KEY, LiveSessions
from workers.coordination.run_lock import LOCK_KEY

log = logging.getLogger(__name__)
MESSAGE_KEY = "retrain:message:{session_id}"
MAX_RECOVERIES = 3  # a session that kills its worker every time (OOM) is not sent forever

Resend = Callable[[dict[str, Any], int], None]  # (message, recoveries so far)


class SessionMessages:
    """Each queued or running session's train-queue message, kept until the session ends."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self._redis = client
        self._ttl_s = ttl_s

    def remember(self, message: dict[str, Any], recoveries: int = 0) -> None:
        sid = message["request"]["session_id"]
        record = json.dumps({"message": message, "recoveries": recoveries})
        self._redis.set(MESSAGE_KEY.format(session_id=sid), record, ex=self._ttl_s)

    def get(self, session_id: str) -> tuple[dict[str, Any], int] | None:
        raw = self._redis.get(MESSAGE_KEY.format(session_id=session_id))
        if raw is None:
            return None
        record = json.loads(raw)
        return record["message"], int(record["recoveries"])

    def forget(self, session_id: str) -> None:
        self._redis.delete(MESSAGE_KEY.format(session_id=session_id))


def recover_orphans(client: redis.Redis, messages: SessionMessages, resend: Resend, *,
                    quiet_for_s: float) -> list[str]:
    """Send orphaned sessions' messages again; the ids sent."""
    live = LiveSessions(client)
    prefix = SESSIONS_KEY.format(repo="")
    sent = []
    for key in client.scan_iter(match=f"{prefix}*"):
        repo = key.decode().removeprefix(prefix)
        for session in live.of_repo(repo):
            if session.status != "running" or time.time() - session.updated_at < quiet_for_s:
                continue
            found = messages.get(session.session_id)
            if found is None:
                continue
            message, recoveries = found
            run = message.get("run")
            if run is None or client.exists(LOCK_KEY.format(repo=repo, run=run)):
                continue  # alive: its heartbeat keeps the lease
            if recoveries >= MAX_RECOVERIES:
                log.error("session %s lost its worker %d times; not sending it again", session.session_id,
                          recoveries)
                continue
            log.warning("session %s of %s lost its worker; sending it again (recovery %d)",
                        session.session_id, repo, recoveries + 1)
            resend(message, recoveries + 1)
            sent.append(session.session_id)
    return sent
