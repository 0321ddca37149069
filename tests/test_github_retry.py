"""When a GitHub failure is worth retrying, and how long GitHub asked us to wait."""

from __future__ import annotations

from http import HTTPStatus

import aiohttp
import pytest
from gidgethub import BadRequest, GitHubBroken, QueryError, RateLimitExceeded, sansio

from app.github_retry import MAX_WAIT_S, requested_wait_s

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
        (bad(404), None),
        (bad(422), None),
        (GitHubBroken(HTTPStatus(502)), 0.0),  # ours to back off
        (aiohttp.ServerDisconnectedError(), 0.0),
        (TimeoutError(), 0.0),
        (QueryError({"errors": [{"type": "RATE_LIMITED", "message": "x"}]}), 60.0),
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
