"""When to retry a GitHub call and how long to wait, with tenacity doing the retrying.

GitHub's rules: a secondary rate limit (403 or 429) says `retry-after`; a primary one says
`x-ratelimit-remaining: 0` and `x-ratelimit-reset`; without either, a 429 means wait at least a minute;
5xx and dropped connections deserve a few jittered retries. Any other 4xx is a real answer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
from gidgethub import GitHubBroken, HTTPException, QueryError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5
MAX_WAIT_S = 15 * 60  # a limit that resets later than this ends the task; the failure is reported
_backoff = wait_random_exponential(multiplier=0.5, max=30)

T = TypeVar("T")


def requested_wait_s(exc: BaseException, now: float | None = None) -> float | None:
    """How long GitHub asked us to wait before retrying (0: back off on our own); None: do not retry."""
    if isinstance(exc, aiohttp.ClientConnectionError | asyncio.TimeoutError | GitHubBroken):
        return 0.0
    if isinstance(exc, QueryError):
        errors = (exc.response or {}).get("errors") or []
        return 60.0 if any(e.get("type") == "RATE_LIMITED" for e in errors) else None
    if not isinstance(exc, HTTPException):
        return None
    status = int(exc.status_code)
    headers: Mapping[str, str] = exc.headers or {}
    if status not in (403, 429):
        return None
    if "retry-after" in headers:
        return _number(headers["retry-after"])
    if headers.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in headers:
        reset = _number(headers["x-ratelimit-reset"])
        return None if reset is None else max(reset - (now or time.time()), 0.0) + 1.0
    return 60.0 if status == 429 else None


def _number(value: str) -> float | None:
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
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_retryable), wait=_wait, stop=stop_after_attempt(MAX_ATTEMPTS), reraise=True
        ):
            with attempt:
                return await fn(*args, **kwargs)
        raise AssertionError("unreachable")

    return wrapper
