"""The per-run queue slots against a real Redis: one current session, one follow-up, the rest coalesced."""

from __future__ import annotations

import time

import redis

from workers.coordination.run_queue import QUEUE_KEY, RunQueue

REPO, RUN = "octo/demo", "nanecho-cached-ci"


def test_current_then_follow_up_then_coalesced(clean_redis: redis.Redis) -> None:
    queue = RunQueue(clean_redis, stale_after_s=3600)
    assert queue.claim(REPO, RUN, "a").kind == "current"
    claim = queue.claim(REPO, RUN, "b")
    assert (claim.kind, claim.other) == ("follow_up", "a")
    assert queue.claim(REPO, RUN, "b").kind == "again"  # a retried events task
    for late in ("c", "d", "e"):
        claim = queue.claim(REPO, RUN, late)
        assert (claim.kind, claim.other) == ("coalesced", "b")
    assert queue.members(REPO, RUN) == ["a", "b"]
    assert queue.claim(REPO, "nanecho-cached-full", "f").kind == "current"  # runs are independent
    queue.release(REPO, RUN, "a")
    assert queue.claim(REPO, RUN, "g").kind == "follow_up"  # b is current now, g waits behind it


def test_a_session_that_never_released_goes_stale(clean_redis: redis.Redis) -> None:
    queue = RunQueue(clean_redis, stale_after_s=60)
    clean_redis.zadd(QUEUE_KEY.format(repo=REPO, run=RUN), {"ghost": time.time() - 120, "waiting": time.time()})
    assert queue.claim(REPO, RUN, "new").kind == "follow_up"
    assert queue.members(REPO, RUN) == ["waiting", "new"]
