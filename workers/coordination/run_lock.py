"""One session at a time per (repository, run): a Redis lease with a TTL, kept alive by a heartbeat thread,
and a fencing token checked right before the progress commit.

Why a lease and not a plain lock: a GPU worker can die (SIGKILL, lost machine) without releasing anything;
the TTL frees the run a minute later. Why a heartbeat rather than a TTL as long as a session: a stuck or
dead session must not block its run for hours. Why a fencing token: a session paused longer than the TTL
(swapping, a stopped VM) may wake up after another session took the run over; it must then not commit.

The token is `<fence>:<session id>`, the fence drawn from a counter per run (INCR). The pre-commit check
and the heartbeat are one Lua script each, so "is it still mine?" and "extend it" are atomic. When Redis
loses the key (a restart without persistence, or a pause past the TTL) while nobody else took the run in
between (the fence counter still holds the holder's own fence, or is gone with everything else), the
holder takes it back with the same token instead of abandoning a session that did nothing wrong.

The emulated GitHub commit itself is a compare-and-swap on the branch head, so even a fencing check
that passes a moment before a takeover cannot lose an update: the registry is merged, never overwritten.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import redis
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

log = logging.getLogger(__name__)

LOCK_KEY = "retrain:lock:{repo}:{run}"
FENCE_KEY = "retrain:fence:{repo}:{run}"

# Acquire: take the run when free, or again when this session already holds it (a redelivered task whose
# earlier delivery died holds nothing: its key expired; a same-session duplicate still running keeps it).
ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current then return {0, current} end
local fence = redis.call('INCR', KEYS[2])
local token = fence .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return {1, token}
"""
# Keep: extend when ours; take back when vacant only while no one else drew a fence since ours (the key
# expired while we were paused and nobody took the run; or Redis lost everything, counter included, which
# is then restored); report a takeover otherwise: someone who took the run and already let it go counts.
KEEP = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if current then return 0 end
local fence = redis.call('GET', KEYS[2])
if fence and tonumber(fence) ~= tonumber(ARGV[3]) then return 0 end
if not fence then redis.call('SET', KEYS[2], ARGV[3]) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 2
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RunBusy(Exception):
    """Another session holds the run; try again later."""

    def __init__(self, repo: str, run: str, holder: str) -> None:
        self.holder_session = holder.partition(":")[2] or holder
        super().__init__(f"{repo} {run} is busy with session {self.holder_session[:8]}")


class LeaseLost(Exception):
    """Another session took the run over while this one was away: it must not commit."""


@dataclass(frozen=True)
class Fence:
    value: int
    token: str


class Lease:
    """A held run. `check()` before committing; `release()` in a finally."""

    def __init__(self, client: redis.Redis, key: str, token: str, ttl_s: float, fence_key: str) -> None:
        self._redis = client
        self._key = key
        self._fence_key = fence_key
        self.fence = Fence(int(token.split(":", 1)[0]), token)
        self._ttl_ms = int(ttl_s * 1000)
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._keep = client.register_script(KEEP)
        self._thread = threading.Thread(target=self._heartbeat, args=(ttl_s / 3,), daemon=True, name=f"lease {key}")
        self._thread.start()

    @property
    def fence_value(self) -> int:
        return self.fence.value

    def _heartbeat(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                self._renew()
            except LeaseLost:
                return
            except redis.RedisError as exc:  # Redis away: keep trying; check() decides before the commit
                log.warning("lease heartbeat for %s failed: %s", self._key, exc)

    def _renew(self) -> None:
        kept = self._keep(keys=[self._key, self._fence_key], args=[self.fence.token, self._ttl_ms, self.fence.value])
        if kept == 2:
            log.warning("lease %s had vanished from Redis (a restart?); taken back", self._key)
        elif kept == 0:
            self._lost.set()
            raise LeaseLost(f"another session took over {self._key}")

    def check(self, unreachable_for_s: float = 60.0) -> None:
        """Raise LeaseLost when another session holds the run now.

        While Redis is away (retried for `unreachable_for_s`) nobody can take the run over, since taking it
        needs Redis too; so a session that cannot reach Redis goes on to commit, and the commit's
        compare-and-swap keeps even that case from losing anything.
        """
        if self._lost.is_set():
            raise LeaseLost(f"another session took over {self._key}")
        try:
            for attempt in Retrying(
                retry=retry_if_exception_type((redis.ConnectionError, redis.TimeoutError)),
                stop=stop_after_delay(unreachable_for_s), wait=wait_fixed(1.0), reraise=True,
            ):
                with attempt:
                    self._renew()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("fencing check for %s skipped: Redis unreachable (%s)", self._key, exc)

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._redis.register_script(RELEASE)(keys=[self._key], args=[self.fence.token])
        except redis.RedisError as exc:  # the TTL frees it soon enough
            log.warning("could not release %s: %s", self._key, exc)


class RunLocks:
    def __init__(self, client: redis.Redis, ttl_s: float = 60.0) -> None:
        self._redis = client
        self._ttl_s = ttl_s
        self._acquire = client.register_script(ACQUIRE)

    def acquire(self, repo: str, run: str, session_id: str) -> Lease:
        """The lease, or RunBusy naming the holder."""
        key, fence_key = LOCK_KEY.format(repo=repo, run=run), FENCE_KEY.format(repo=repo, run=run)
        taken, token = self._acquire(keys=[key, fence_key], args=[session_id, int(self._ttl_s * 1000)])
        token = token.decode() if isinstance(token, bytes) else str(token)
        if not taken:
            raise RunBusy(repo, run, token)
        return Lease(self._redis, key, token, self._ttl_s, fence_key)
