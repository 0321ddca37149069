"""Which delivery started each session. GitHub signs a delivery's body, not its `X-GitHub-Delivery` header,
so a captured body posted again under a new delivery id must start nothing: a session's id comes from what
the body says (the comment, the check run, the workflow run, the dispatch itself: app/features), and the
first delivery to claim that id owns it. The same delivery again (a retried events task, GitHub's own
redelivery of a failed one) carries on where it stopped.
"""

from __future__ import annotations

import json
from typing import Any

import redis

STARTED_KEY = "retrain:started:{session_id}"
CHECK_RUN_KEY = "retrain:started:{session_id}:check_run"
REPLY_KEY = "retrain:started:{session_id}:reply"
CLAIM = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return owner end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""


class SessionStarts:
    def __init__(self, client: redis.Redis, remember_s: int) -> None:
        self._redis = client
        self._remember_s = remember_s
        self._claim = client.register_script(CLAIM)

    def claim(self, session_id: str, delivery_id: str) -> str | None:
        """None when this delivery may start the session; else the delivery that already did."""
        owner = self._claim(keys=[STARTED_KEY.format(session_id=session_id)], args=[delivery_id, self._remember_s])
        return owner.decode() if isinstance(owner, bytes) else owner or None

    def release(self, session_id: str, delivery_id: str) -> None:
        """The session was not queued after all: a later delivery of the same event may start it."""
        key = STARTED_KEY.format(session_id=session_id)
        if self._redis.get(key) == delivery_id.encode():
            self._redis.delete(key)

    def remember_check_run(self, session_id: str, check_run: dict[str, Any]) -> None:
        """The session's queued check run, for a second go at the event: looking it up by external id
        finds it only on the commit it was made on, and the branch may have moved since."""
        self._redis.set(CHECK_RUN_KEY.format(session_id=session_id), json.dumps(check_run), ex=self._remember_s)

    def check_run_of(self, session_id: str) -> dict[str, Any] | None:
        raw = self._redis.get(CHECK_RUN_KEY.format(session_id=session_id))
        return json.loads(raw) if raw else None

    def remember_reply(self, session_id: str, comment_id: int) -> None:
        """The session's one reply, which its worker edits as the session goes on (workers/jobs/reporting.py)."""
        self._redis.set(REPLY_KEY.format(session_id=session_id), str(comment_id), ex=self._remember_s)

    def reply_of(self, session_id: str) -> int | None:
        raw = self._redis.get(REPLY_KEY.format(session_id=session_id))
        return int(raw) if raw else None
