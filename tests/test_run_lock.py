"""The (repository, run) lease against a real Redis: exclusive, kept alive by its heartbeat, freed by its TTL
when the holder dies, fenced when another session takes over, and taken back when Redis forgets it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from workers.coordination.run_lock import FENCE_KEY, LOCK_KEY, Lease, LeaseLost, RunBusy, RunLocks

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
    lease = Lease(unreachable, KEY, "7:session-a", ttl_s=30, fence_key=FENCE_KEY.format(repo=REPO, run=RUN))
    started = time.monotonic()
    lease.check(unreachable_for_s=1.0)  # no exception: nobody can have taken the run without Redis
    assert 0.9 < time.monotonic() - started < 5
    lease.release()


HOLDER = """
import sys, redis
from workers.coordination.run_lock import LeaseLost, RunLocks
lease = RunLocks(redis.Redis.from_url(sys.argv[1]), ttl_s=1.0).acquire("octo/demo", "nanecho-cached-ci", sys.argv[2])
print("held", lease.fence.value, flush=True)
sys.stdin.readline()
try:
    lease.check()
    print("may commit", flush=True)
except LeaseLost:
    print("lost", flush=True)
lease.release()
"""


def holder(redis_url: str, session: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER, redis_url, session], cwd=Path(__file__).parents[1],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_a_holder_paused_past_its_ttl_is_fenced_out_even_after_the_next_holder_left(
    redis_url: str, clean_redis: redis.Redis, fault_report,
) -> None:
    """Session A's process is frozen (SIGSTOP: a swapping or stopped VM) past its TTL; session B, another
    process, takes the run, works and releases it; A wakes with the run vacant and must not commit."""
    a = holder(redis_url, "session-a")
    try:
        assert a.stdout.readline().split() == ["held", "1"]
        a.send_signal(signal.SIGSTOP)
        time.sleep(1.5)  # past A's TTL: its heartbeat is frozen with it
        b = holder(redis_url, "session-b")
        assert b.stdout.readline().split() == ["held", "2"]
        assert b.communicate("\n", timeout=30)[0].strip() == "may commit"  # B is done, and released the run
        assert clean_redis.get(KEY) is None
        a.send_signal(signal.SIGCONT)
        assert a.communicate("\n", timeout=30)[0].strip() == "lost"
        assert clean_redis.get(KEY) is None, "the overtaken holder took the vacant run back"
        fault_report("lease holder A's process SIGSTOPped past its TTL; B took the run, finished and released it",
                     "A woke to a vacant run, its fencing check failed (fence 2 ≠ 1): A may not commit")
    finally:
        a.kill()
