"""The (repository, run) lease against a real Redis: exclusive, kept alive by its heartbeat, freed by its TTL
when the holder dies, fenced when another session takes over, and taken back when Redis forgets it."""

from __future__ import annotations

import time

import pytest
import redis

from workers.coordination.run_lock import LOCK_KEY, Lease, LeaseLost, RunBusy, RunLocks

REPO, RUN = "octo/demo", "nanecho-cached-ci"
KEY = LOCK_KEY.format(repo=REPO, run=RUN)


def test_one_holder_at_a_time_with_increasing_fences(clean_redis: redis.Redis) -> None:
    locks = RunLocks(clean_redis, ttl_s=5)
    first = locks.acquire(REPO, RUN, "session-a")
    with pytest.raises(RunBusy) as busy:
        locks.acquire(REPO, RUN, "session-b")
    assert busy.value.holder_session == "session-a"
    other_run = locks.acquire(REPO, "nanecho-cached-full", "session-b")  # runs are independent
    first.release()
    second = locks.acquire(REPO, RUN, "session-b")
    assert second.fence_value > first.fence_value
    second.check()
    second.release()
    other_run.release()
    assert clean_redis.get(KEY) is None


def test_the_heartbeat_outlives_the_ttl_and_a_dead_holder_frees_the_run(clean_redis: redis.Redis) -> None:
    locks = RunLocks(clean_redis, ttl_s=0.6)
    lease = locks.acquire(REPO, RUN, "session-a")
    time.sleep(1.5)  # more than twice the TTL: only the heartbeat keeps it
    lease.check()
    with pytest.raises(RunBusy):
        locks.acquire(REPO, RUN, "session-b")
    lease._stop.set()  # the holder dies: no heartbeat, no release
    time.sleep(1.0)
    locks.acquire(REPO, RUN, "session-b").release()


def test_a_takeover_fences_the_old_holder_out(clean_redis: redis.Redis) -> None:
    locks = RunLocks(clean_redis, ttl_s=30)
    lease = locks.acquire(REPO, RUN, "session-a")
    clean_redis.set(KEY, "99:session-b")  # session-a was paused past its TTL and session-b took the run
    with pytest.raises(LeaseLost):
        lease.check()
    lease.release()
    assert clean_redis.get(KEY) == b"99:session-b", "releasing a lost lease must not free the new holder's run"


def test_a_lease_forgotten_by_redis_is_taken_back(clean_redis: redis.Redis) -> None:
    locks = RunLocks(clean_redis, ttl_s=30)
    lease = locks.acquire(REPO, RUN, "session-a")
    clean_redis.flushdb()  # a restart without persistence
    lease.check()
    assert clean_redis.get(KEY) == lease.fence.token.encode()
    lease.release()


def test_the_fencing_check_waits_out_a_short_outage_then_lets_the_commit_decide() -> None:
    unreachable = redis.Redis(port=1, socket_connect_timeout=0.1)  # nothing listens on port 1
    lease = Lease(unreachable, KEY, "7:session-a", ttl_s=30)
    started = time.monotonic()
    lease.check(unreachable_for_s=1.0)  # no exception: nobody can have taken the run without Redis
    assert 0.9 < time.monotonic() - started < 5
    lease.release()
