"""At most two sessions per (repository, run): the current one (queued or running) and one follow-up.

Five people pressing the button while a session trains want one more session on the newest data, not five
in a row; triggers beyond the follow-up join it and are told so. The bookkeeping is a sorted set per run
(session id → time it was claimed); a claim and its answer are one Lua script, so concurrent events
workers cannot both become the follow-up.

A session leaves the set when it ends, however it ends (`release` in the train job's `finally`). A member
whose worker vanished without running its `finally` (a hard time limit) is dropped once it is older than
`stale_after_s`, the longest a session may be queued and run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import redis

QUEUE_KEY = "retrain:runq:{repo}:{run}"

CLAIM = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2] - ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {'again', ARGV[1]} end
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
if #members == 0 then redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1]) return {'current', ARGV[1]} end
if #members == 1 then redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1]) return {'follow_up', members[1]} end
return {'coalesced', members[#members]}
"""


@dataclass(frozen=True)
class Claim:
    """`current`: nothing else queued or running; `follow_up`: waits for `other`; `coalesced`: joins the
    waiting follow-up `other` and starts nothing; `again`: this session had already claimed (a retry)."""

    kind: Literal["current", "follow_up", "coalesced", "again"]
    other: str


class RunQueue:
    def __init__(self, client: redis.Redis, stale_after_s: float) -> None:
        self._redis = client
        self._stale_after_s = stale_after_s
        self._claim = client.register_script(CLAIM)

    def claim(self, repo: str, run: str, session_id: str) -> Claim:
        kind, other = self._claim(keys=[QUEUE_KEY.format(repo=repo, run=run)],
                                  args=[session_id, time.time(), self._stale_after_s])
        decode = lambda v: v.decode() if isinstance(v, bytes) else str(v)  # noqa: E731
        return Claim(decode(kind), decode(other))  # type: ignore[arg-type]

    @classmethod
    def for_url(cls, url: str, stale_after_s: float) -> RunQueue:
        return cls(redis.Redis.from_url(url), stale_after_s)

    def release(self, repo: str, run: str, session_id: str) -> None:
        self._redis.zrem(QUEUE_KEY.format(repo=repo, run=run), session_id)

    def members(self, repo: str, run: str) -> list[str]:
        return [m.decode() for m in self._redis.zrange(QUEUE_KEY.format(repo=repo, run=run), 0, -1)]
