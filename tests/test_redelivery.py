"""Failed webhook deliveries: which ones are redelivered (pure), and the job against the emulator's delivery
log and a real Redis, where "at most once each" must hold across runs and overlapping runs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from app.config.settings import Settings
from app.github.retry import MAX_ATTEMPTS
from workers.jobs import redelivery
from workers.jobs.redelivery import redeliver_failed, select_redeliveries

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)


def delivery(id_: int, guid: str, status_code: int = 502, *, redelivery: bool = False, hours_ago: float = 1) -> dict:
    status = "OK" if status_code < 300 else f"Invalid HTTP Response: {status_code}"
    at = (NOW - timedelta(hours=hours_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"id": id_, "guid": guid, "status_code": status_code, "status": status, "redelivery": redelivery,
            "delivered_at": at, "event": "issue_comment", "action": "created"}


def test_only_failed_originals_without_a_later_success_are_chosen_once_per_guid() -> None:
    chosen = select_redeliveries(
        [
            delivery(1, "failed"),
            delivery(2, "ok", 200),
            delivery(3, "fixed", 502, hours_ago=2), delivery(4, "fixed", 200, redelivery=True),
            delivery(5, "only-redelivery-failed", 500, redelivery=True),
            delivery(6, "too-old", 502, hours_ago=30),
            delivery(7, "twice", 502, hours_ago=3), delivery(8, "twice", 504, hours_ago=2),
            delivery(9, "timed-out", 0) | {"status": "timed out"},
        ],
        now=NOW,
    )
    assert [(d["id"], d["guid"]) for d in chosen] == [(9, "timed-out"), (1, "failed"), (8, "twice")]  # newest first


@pytest.fixture
def settings(settings: Settings, clean_redis) -> Settings:
    """The shared settings, on a flushed Redis database."""
    return settings


def test_failed_deliveries_are_redelivered_once_across_runs(github, settings, clean_redis, monkeypatch) -> None:
    emu, _ = github
    monkeypatch.setattr(redelivery, "PER_PAGE", 2)  # several pages through the `Link` cursor
    emu.redelivery_status_code = 502  # and the redeliveries fail too: still never asked for again
    failed = emu.add_hook_delivery(guid="g-failed", event="issue_comment", action="created", status_code=502)
    emu.add_hook_delivery(guid="g-ok", event="push", status_code=200)
    emu.add_hook_delivery(guid="g-fixed", event="issue_comment", action="created", status_code=500)
    emu.add_hook_delivery(guid="g-fixed", event="issue_comment", action="created", status_code=202, redelivery=True)
    emu.add_hook_delivery(guid="g-theirs", event="push", status_code=502, redelivery=True)
    old = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    emu.add_hook_delivery(guid="g-old", event="push", status_code=502, delivered_at=old)
    timeout = emu.add_hook_delivery(guid="g-timeout", event="installation", action="created", status_code=504)

    first = asyncio.run(redeliver_failed(settings))
    assert sorted(first) == sorted([failed, timeout])
    assert sorted(emu.redelivery_requests) == sorted([failed, timeout])
    assert clean_redis.ttl("retrain:redelivered:g-failed") > redelivery.LOOKBACK.total_seconds()

    assert asyncio.run(redeliver_failed(settings)) == []  # the failed redeliveries are in the log now
    assert sorted(emu.redelivery_requests) == sorted([failed, timeout])
    listed = [c for c in emu.calls if c.method == "GET" and c.path == "/app/hook/deliveries"]
    assert len(listed) >= 2 * 4, "pages of 2 over 8+ deliveries, twice"


def test_overlapping_runs_ask_once_and_a_refused_redelivery_is_not_retried(github, settings) -> None:
    emu, _ = github
    ids = [emu.add_hook_delivery(guid=f"g{i}", event="issue_comment", action="created") for i in range(5)]

    async def two_runs() -> list[list[int]]:
        return list(await asyncio.gather(redeliver_failed(settings), redeliver_failed(settings)))

    runs = asyncio.run(two_runs())
    assert sorted(runs[0] + runs[1]) == sorted(ids)
    assert sorted(emu.redelivery_requests) == sorted(ids)

    gone = emu.add_hook_delivery(guid="g-gone", event="push")
    emu.inject_fault("POST", rf"/app/hook/deliveries/{gone}/attempts", 404, body={"message": "Not Found"})
    assert asyncio.run(redeliver_failed(settings)) == []
    assert asyncio.run(redeliver_failed(settings)) == []  # claimed: at most once, even when refused
    assert gone not in emu.redelivery_requests


def test_a_redelivery_whose_ask_fails_is_asked_again_by_the_next_run(github, settings, clean_redis) -> None:
    """At least once: GitHub broke on every retry of the ask, so the claim is let go and the next run asks."""
    emu, _ = github
    lost = emu.add_hook_delivery(guid="g-lost", event="issue_comment", action="created")
    emu.inject_fault("POST", rf"/app/hook/deliveries/{lost}/attempts", 502, times=MAX_ATTEMPTS)
    assert asyncio.run(redeliver_failed(settings)) == []
    assert lost not in emu.redelivery_requests and clean_redis.get("retrain:redelivered:g-lost") is None
    assert asyncio.run(redeliver_failed(settings)) == [lost]
    assert emu.redelivery_requests == [lost]
