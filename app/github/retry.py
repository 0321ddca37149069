"""When to retry a GitHub call and how long to wait, with tenacity doing the retrying.

GitHub's rules ("Rate limits for the REST API", "Rate limits and node limits for the GraphQL API"):
- a secondary rate limit (403 or 429, REST and GraphQL alike) says `retry-after`; without it, wait at
  least a minute (a 429, or a 403 whose message names the secondary limit);
- a primary one says `x-ratelimit-remaining: 0` and `x-ratelimit-reset` (REST: 403/429; GraphQL: a 200
  whose errors say RATE_LIMITED, with the same headers: `GraphQLRateLimited` carries the reset);
- 5xx and dropped connections deserve a few jittered retries. Any other 4xx is a real answer.

A retried request may already have been carried out when only its answer was lost (`ambiguous`): calls
that create something use `create_once`, which looks for what the lost attempt made before making it again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
from gidgethub import GitHubBroken, HTTPException, QueryError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5
MAX_WAIT_S = 15 * 60  # one call waits at most this long in all; past it the task ends (or is tried again later)
_backoff = wait_random_exponential(multiplier=0.5, max=30)

T = TypeVar("T")
SECONDARY_LIMIT = re.compile(r"secondary rate limit", re.IGNORECASE)
GRAPHQL_LIMIT_FALLBACK_S = 60.0  # a RATE_LIMITED answer that names no reset: GitHub's minute


GRAPHQL_LIMIT_TYPES = {"RATE_LIMITED", "RATE_LIMIT"}  # the older and the newer shape of the same answer


class GraphQLRateLimited(QueryError):
    """A GraphQL rate limit answered in a 200 (errors of type RATE_LIMITED), with the reset its headers gave
    when they say the points are spent, which gidgethub's QueryError drops."""

    def __init__(self, response: dict[str, Any], reset_epoch: float | None, retry_after_s: float | None = None
                 ) -> None:
        super().__init__(response)
        self.reset_epoch = reset_epoch
        self.retry_after_s = retry_after_s  # a secondary limit's own `retry-after`, when the 200 carried one


def is_rate_limited(exc: BaseException) -> bool:
    """A GraphQL answer that is a rate limit, primary (type RATE_LIMITED, or RATE_LIMIT with code
    graphql_rate_limit) or secondary (its message says so): a limit to wait out, not a reason to try
    another API."""
    if not isinstance(exc, QueryError):
        return False
    errors = [e for e in (exc.response or {}).get("errors") or [] if isinstance(e, dict)]
    return any(e.get("type") in GRAPHQL_LIMIT_TYPES or e.get("code") == "graphql_rate_limit"
               or SECONDARY_LIMIT.search(str(e.get("message") or "")) for e in errors)


def requested_wait_s(exc: BaseException, now: float | None = None) -> float | None:
    """How long GitHub asked us to wait before retrying (0: back off on our own); None: do not retry."""
    if isinstance(exc, aiohttp.ClientConnectionError | asyncio.TimeoutError | GitHubBroken):
        return 0.0
    if isinstance(exc, QueryError):
        if not is_rate_limited(exc):
            return None
        if getattr(exc, "retry_after_s", None) is not None:
            return float(exc.retry_after_s)  # type: ignore[attr-defined]
        reset = getattr(exc, "reset_epoch", None)
        if reset is None:
            return GRAPHQL_LIMIT_FALLBACK_S
        return max(reset - (now or time.time()), 0.0) + 1.0
    if not isinstance(exc, HTTPException):
        return None
    status = int(exc.status_code)
    headers: Mapping[str, str] = exc.headers or {}
    if status not in (403, 429):
        return None
    if "retry-after" in headers:
        return seconds(headers["retry-after"])
    if headers.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in headers:
        reset = seconds(headers["x-ratelimit-reset"])
        return None if reset is None else max(reset - (now or time.time()), 0.0) + 1.0
    if status == 429 or SECONDARY_LIMIT.search(str(exc)):  # a secondary limit that says no retry-after
        return 60.0
    return None


def ambiguous(exc: BaseException) -> bool:
    """Whether the request may have been carried out although it failed: its answer was lost (a dropped
    connection, a timeout) or GitHub broke while answering (5xx). A rate limit or 4xx refused it unseen."""
    return isinstance(exc, aiohttp.ClientConnectionError | asyncio.TimeoutError | GitHubBroken)


def seconds(value: str) -> float | None:
    """A header's number of seconds (retry-after, x-ratelimit-reset), or None when it is not one."""
    try:
        return float(value)
    except ValueError:
        return None


def _retryable(exc: BaseException) -> bool:
    wait = requested_wait_s(exc)
    return wait is not None and wait <= MAX_WAIT_S


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    asked = requested_wait_s(exc) if exc is not None else 0.0
    wait = max(asked or 0.0, _backoff(state))
    log.warning("GitHub call failed (%s); retrying in %.1fs (attempt %d)", type(exc).__name__, wait,
                state.attempt_number + 1)
    return wait


def with_retries(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Retry an async GitHub call per GitHub's rules, at most MAX_ATTEMPTS times, then re-raise."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        async for attempt in _attempts():
            with attempt:
                return await fn(*args, **kwargs)
        raise AssertionError("unreachable")

    return wrapper


def _attempts() -> AsyncRetrying:
    """At most MAX_ATTEMPTS tries and MAX_WAIT_S of waiting in all: a spent limit must not hold a worker
    slot for an hour in four waits; the events task tries again later without holding one."""
    return AsyncRetrying(retry=retry_if_exception(_retryable), wait=_wait, reraise=True,
                         stop=stop_after_attempt(MAX_ATTEMPTS) | stop_before_delay(MAX_WAIT_S))


async def create_once(create: Callable[[], Awaitable[T]], find: Callable[[], Awaitable[T | None]], *,
                      look_first: bool = False) -> T:
    """`create`, retried like `with_retries`; after an ambiguous failure, `find` first looks for what the
    lost attempt may have made (a marker in a comment, a check run's external id) and returns it instead
    of making a second one. `look_first`: look before the first attempt too (an earlier go may have made
    it); one budget of attempts and waiting covers looking and creating."""
    maybe_made = look_first
    async for attempt in _attempts():
        with attempt:
            if maybe_made:
                found = await find()
                if found is not None:
                    log.info("found what an earlier attempt made; not creating it again")
                    return found
                maybe_made = False  # looked, and it is not there: only a new ambiguous failure asks again
            try:
                return await create()
            except BaseException as exc:
                maybe_made = maybe_made or ambiguous(exc)
                raise
    raise AssertionError("unreachable")
