"""When a GitHub failure is worth retrying, and how long GitHub asked us to wait."""

from __future__ import annotations

import random
from http import HTTPStatus

import aiohttp
import kombu.exceptions
import pytest
import redis
from gidgethub import BadRequest, GitHubBroken, QueryError, RateLimitExceeded, sansio

from app.github.retry import MAX_WAIT_S, GraphQLRateLimited, ambiguous, requested_wait_s
from workers.jobs.events import wait_before_retry_s

NOW = 1_800_000_000.0


def bad(status: int, **headers: str) -> BadRequest:
    return BadRequest(HTTPStatus(status), "x", headers=headers)


@pytest.mark.parametrize(
    ("exc", "wait"),
    [
        (bad(429, **{"retry-after": "7"}), 7.0),  # secondary limit, told how long
        (bad(403, **{"retry-after": "30"}), 30.0),
        (bad(403, **{"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 20)}), 21.0),  # primary
        (bad(429), 60.0),  # no header: at least a minute, per GitHub's docs
        (bad(403), None),  # a permission problem, not a limit
        (BadRequest(HTTPStatus(403), "You have exceeded a secondary rate limit. Please wait a few minutes before "
                    "you try again.", headers={}), 60.0),  # secondary without retry-after: at least a minute
        (bad(404), None),
        (bad(422), None),
        (GitHubBroken(HTTPStatus(502)), 0.0),  # ours to back off
        (aiohttp.ServerDisconnectedError(), 0.0),
        (TimeoutError(), 0.0),
        (QueryError({"errors": [{"type": "RATE_LIMITED", "message": "x"}]}), 60.0),  # no reset known
        (GraphQLRateLimited({"errors": [{"type": "RATE_LIMITED", "message": "x"}]}, NOW + 9), 10.0),
        (GraphQLRateLimited({"errors": [{"type": "RATE_LIMITED", "message": "x"}]}, None), 60.0),
        (QueryError({"errors": [{"type": "RATE_LIMIT", "code": "graphql_rate_limit", "message": "x"}]}), 60.0),
        (QueryError({"errors": [{"message": "You have exceeded a secondary rate limit."}]}), 60.0),  # in a 200
        (QueryError({"errors": [{"type": "STALE_DATA", "message": "x"}]}), None),
        (ValueError("bug"), None),
    ],
)
def test_requested_wait(exc: BaseException, wait: float | None) -> None:
    assert requested_wait_s(exc, now=NOW) == wait


def test_primary_limit_exception_from_gidgethub_is_understood() -> None:
    headers = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 5)}
    limit = sansio.RateLimit.from_http(headers)
    assert limit is not None
    exc = RateLimitExceeded(limit, "API rate limit exceeded", headers=headers)
    assert requested_wait_s(exc, now=NOW) == 6.0
    far = {**headers, "x-ratelimit-reset": str(int(NOW) + 2 * MAX_WAIT_S)}
    assert requested_wait_s(RateLimitExceeded(limit, "x", headers=far), now=NOW) > MAX_WAIT_S


def test_only_lost_answers_are_ambiguous() -> None:
    """A create that failed this way may have happened: look before creating again. A limit never ran."""
    assert ambiguous(GitHubBroken(HTTPStatus(502))) and ambiguous(aiohttp.ServerDisconnectedError())
    assert ambiguous(TimeoutError())
    assert not ambiguous(bad(403, **{"retry-after": "3"})) and not ambiguous(bad(422))


def test_an_events_task_waits_longer_each_time_and_gives_up_on_real_answers() -> None:
    rand = random.Random(1)
    waits = [wait_before_retry_s(GitHubBroken(HTTPStatus(502)), n, 10.0, rand) for n in range(4)]
    assert all(w is not None for w in waits)
    assert [10 * 2**n / 2 <= w <= 10 * 2**n for n, w in enumerate(waits)] == [True] * 4
    assert wait_before_retry_s(redis.ConnectionError("down"), 0, 10.0, rand) is not None
    assert wait_before_retry_s(kombu.exceptions.OperationalError("broker down"), 0, 10.0, rand) is not None
    assert wait_before_retry_s(bad(403, **{"retry-after": "120"}), 0, 10.0, rand) == 120.0  # as GitHub asked
    assert wait_before_retry_s(bad(404), 0, 10.0, rand) is None
    assert wait_before_retry_s(ValueError("a bug"), 0, 10.0, rand) is None
