"""Live session records in a real Redis: what status shows and how cancel is asked for."""

from __future__ import annotations

import redis

from workers.coordination.live import SESSIONS_KEY, LiveSession, LiveSessions


def test_sessions_are_listed_running_first_and_removed_when_done(clean_redis: redis.Redis) -> None:
    live = LiveSessions(clean_redis)
    live.put("o/r", LiveSession("s1", "ci", "queued", "issue_comment", "alice"))
    live.put("o/r", LiveSession("s2", "full", "queued", "workflow_dispatch"))
    live.update("o/r", "s2", status="running", iteration=120, loss=1.5)
    live.put("o/other", LiveSession("s3", "ci", "queued", "issue_comment"))
    assert [(s.session_id, s.status) for s in live.of_repo("o/r")] == [("s2", "running"), ("s1", "queued")]
    assert live.get("o/r", "s2").loss == 1.5
    live.remove("o/r", "s2")
    assert [s.session_id for s in live.of_repo("o/r")] == ["s1"]
    assert clean_redis.ttl(SESSIONS_KEY.format(repo="o/r")) > 0


def test_cancel_marks_only_that_repositorys_sessions(clean_redis: redis.Redis) -> None:
    live = LiveSessions(clean_redis)
    live.put("o/r", LiveSession("s1", "ci", "running", "issue_comment"))
    live.put("o/other", LiveSession("s3", "ci", "queued", "issue_comment"))
    assert [s.session_id for s in live.cancel("o/r")] == ["s1"]
    assert live.cancel_requested("s1") and not live.cancel_requested("s3")


def test_garbage_records_are_dropped(clean_redis: redis.Redis) -> None:
    clean_redis.hset(SESSIONS_KEY.format(repo="o/r"), "bad", "{not json")
    assert LiveSessions(clean_redis).of_repo("o/r") == []
    assert not clean_redis.hexists(SESSIONS_KEY.format(repo="o/r"), "bad")
