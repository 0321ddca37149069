"""Session time per installation per UTC day (settings.gpu_seconds_per_day), all its repositories together.

One Redis hash per (installation, day): `used` (seconds charged) and `held:<session>` (what a running
session was granted and has not used yet). A session is granted at most what is left after `used` and
everyone else's holds, so sessions that run at once cannot together overspend; it charges its time as it
goes (a lost worker's time is charged up to its last report) and hands the rest back when it ends. Grant
and charge are Lua scripts, one step each against concurrent workers. A session is charged to the day it
started on, so its grant is fixed when it starts.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import redis

from app.errors import RetrainError

log = logging.getLogger(__name__)
BUDGET_KEY = "retrain:budget:{installation_id}:{day}"
KEEP_S = 3 * 24 * 3600  # a day's record outlives any session that started on it
MIN_GRANT_S = 60.0  # less than this is not worth starting a session for

LEFT = """
local used = tonumber(redis.call('HGET', KEYS[1], 'used') or '0')
local held = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 5) == 'held:' and fields[i] ~= 'held:' .. ARGV[1] then
    held = held + tonumber(fields[i + 1])
  end
end
return tostring(tonumber(ARGV[2]) - used - held)
"""
GRANT = LEFT.replace("return tostring(tonumber(ARGV[2]) - used - held)", """
local left = tonumber(ARGV[2]) - used - held
local grant = math.min(tonumber(ARGV[3]), left)
if grant < tonumber(ARGV[4]) then return {'0', tostring(left)} end
redis.call('HSET', KEYS[1], 'held:' .. ARGV[1], tostring(grant))
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {tostring(grant), tostring(left)}
""")
CHARGE = """
redis.call('HINCRBYFLOAT', KEYS[1], 'used', ARGV[2])
local held = redis.call('HGET', KEYS[1], 'held:' .. ARGV[1])
if held then
  local rest = tonumber(held) - tonumber(ARGV[2])
  if rest > 0 then redis.call('HSET', KEYS[1], 'held:' .. ARGV[1], tostring(rest))
  else redis.call('HDEL', KEYS[1], 'held:' .. ARGV[1]) end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
"""


def utc_day(now: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y-%m-%d")


class BudgetSpent(RetrainError):
    """The installation has used its session time for the day; the message says the limit and when it renews."""

    def __init__(self, per_day_s: float, left_s: float, day: str) -> None:
        self.left_s = max(left_s, 0.0)
        super().__init__(
            f"this installation has {self.left_s:.0f} s of its {per_day_s / 3600:g} h of session time left for {day} "
            "(UTC), less than a session needs (RETRAIN_GPU_SECONDS_PER_DAY, set by whoever runs the App); it "
            "renews at 00:00 UTC"
        )


class SessionBudgets:
    def __init__(self, client: redis.Redis, per_day_s: float) -> None:
        self._redis = client
        self.per_day_s = per_day_s
        self._left = client.register_script(LEFT)
        self._grant = client.register_script(GRANT)
        self._charge = client.register_script(CHARGE)

    def left(self, installation_id: int, day: str | None = None) -> float:
        """Seconds not used or held today: what the next session could be granted."""
        key = BUDGET_KEY.format(installation_id=installation_id, day=day or utc_day())
        return float(self._left(keys=[key], args=["", self.per_day_s]))

    def require_some_left(self, installation_id: int) -> None:
        """At enqueue: refuse a session that could not start today. What running sessions hold is not
        counted: they may give most of it back before this one starts."""
        day = utc_day()
        used = self._redis.hget(BUDGET_KEY.format(installation_id=installation_id, day=day), "used")
        left = self.per_day_s - float(used or 0)
        if left < MIN_GRANT_S:
            raise BudgetSpent(self.per_day_s, left, day)

    def grant(self, installation_id: int, session_id: str, wanted_s: float) -> Grant:
        """Hold up to `wanted_s` for the session; raises BudgetSpent when less than a minute is left. A
        redelivered session's new grant replaces its old hold."""
        day = utc_day()
        key = BUDGET_KEY.format(installation_id=installation_id, day=day)
        granted, left = self._grant(keys=[key], args=[session_id, self.per_day_s, wanted_s, min(MIN_GRANT_S, wanted_s),
                                                      KEEP_S])
        if float(granted) <= 0:
            raise BudgetSpent(self.per_day_s, float(left), day)
        return Grant(self, key, session_id, float(granted))

    def release_session(self, installation_id: int, session_id: str) -> None:
        """Whatever the session still holds, today or (started before midnight) yesterday."""
        now = time.time()
        with self._redis.pipeline() as pipe:
            for day in {utc_day(now), utc_day(now - 24 * 3600)}:
                pipe.hdel(BUDGET_KEY.format(installation_id=installation_id, day=day), f"held:{session_id}")
            pipe.execute()

    def charge(self, key: str, session_id: str, seconds: float) -> None:
        self._charge(keys=[key], args=[session_id, f"{seconds:.3f}", KEEP_S])

    def release(self, key: str, session_id: str) -> None:
        self._redis.hdel(key, f"held:{session_id}")


class Grant:
    """One session's hold: `charge()` as it runs, `close()` when it ends (charges the rest, frees the hold)."""

    def __init__(self, budgets: SessionBudgets, key: str, session_id: str, seconds: float) -> None:
        self.seconds = seconds
        self._budgets, self._key, self._session_id = budgets, key, session_id
        self._since = time.monotonic()

    def charge(self) -> None:
        now = time.monotonic()
        try:
            self._budgets.charge(self._key, self._session_id, now - self._since)
            self._since = now
        except redis.RedisError:  # charged at the next report instead
            log.warning("could not charge session time of %s", self._session_id, exc_info=True)

    def close(self) -> None:
        self.charge()
        try:
            self._budgets.release(self._key, self._session_id)
        except redis.RedisError:
            log.warning("could not release the session-time hold of %s", self._session_id, exc_info=True)
