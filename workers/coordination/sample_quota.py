"""Samples per repository per clock hour (settings.samples_per_hour): `/retrain sample` runs a model on the
train worker, so a busy thread cannot turn it into a queue of GPU work. One Redis counter per (repository,
hour), counted up and read in one step (INCR), expiring with its hour; a refused ask is not counted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

QUOTA_KEY = "retrain:samples:{repo}:{hour}"
HOUR_S = 3600

TAKE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Taken:
    ok: bool
    wait_s: int  # until the next hour starts, when refused


class SampleQuota:
    def __init__(self, client: redis.Redis, per_hour: int) -> None:
        self._client = client
        self._per_hour = per_hour
        self._take = client.register_script(TAKE)

    @property
    def per_hour(self) -> int:
        return self._per_hour

    def take(self, repo: str, now: float | None = None) -> Taken:
        """One sample of this hour's for `repo`, if any are left."""
        now = time.time() if now is None else now
        hour = int(now // HOUR_S)
        key = QUOTA_KEY.format(repo=repo, hour=hour)
        ok = bool(self._take(keys=[key], args=[self._per_hour, HOUR_S + 60]))
        return Taken(ok, 0 if ok else int((hour + 1) * HOUR_S - now) + 1)
