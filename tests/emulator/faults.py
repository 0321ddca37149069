"""Injected faults (rate limits, server errors) and the rate-limit headers of every normal answer.

Shapes, from GitHub's documentation ("Rate limits for the REST API", "Troubleshooting the REST API") and
bodies of real answers quoted in public projects (found with the search tool):
- primary limit: 403 (or 429) with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` (epoch seconds),
  body {"message": "API rate limit exceeded for installation ID <id>. If you reach out to GitHub Support
  for help, please include the request ID <id> and timestamp <time> UTC.",
  "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api", "status": "403"};
- secondary limit: 403 or 429, often with `retry-after`, body {"message": "You have exceeded a secondary
  rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help,
  please include the request ID <id>.", "documentation_url": ".../rate-limits-for-the-rest-api#about-
  secondary-rate-limits"};
- 500/502: {"message": "Server Error"}.
GraphQL, from "Rate limits and query limits for the GraphQL API" (docs.github.com): a spent primary limit is
still HTTP 200, with an error in the body and `x-ratelimit-remaining: 0` (wait for `x-ratelimit-reset`);
`x-ratelimit-resource` is always `graphql`. The error is {"type": "RATE_LIMITED", "message": "API rate limit
exceeded for <who>."} (the type octokit/plugin-throttling.js looks for; `gh` prints "GraphQL: API rate limit
exceeded for user ID <id>", cli/cli#8321); since 2026 GitHub has also been seen answering {"type":
"RATE_LIMIT", "code": "graphql_rate_limit", "message": "API rate limit already exceeded for user ID <id>."}
(yanyongyu/githubkit#271). A secondary limit is "200 or 403" with a message saying so, and `retry-after`
when GitHub names a wait (otherwise wait at least a minute).
Every answer carries `x-github-request-id`; REST and GraphQL answers carry x-ratelimit-limit, -remaining,
-reset, -used and -resource (core or graphql), counted per installation as GitHub counts them (per App
for App JWTs, per client address for anything else, 60 an hour).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

PRIMARY_DOCS = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
SECONDARY_DOCS = ("https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api"
                  "#about-secondary-rate-limits")
LIMITS = {"installation": 5000, "app": 5000, "client": 60}
WINDOW_S = 3600
DROP_CONNECTION = 0  # a fault "status" that answers nothing: the connection is aborted


def request_id() -> str:
    """An `x-github-request-id` in GitHub's form (five hex groups)."""
    return ":".join(secrets.token_hex(n).upper() for n in (2, 3, 4, 4, 4))


@dataclass
class Fault:
    """A canned answer for the next `remaining` requests matching `method` and `pattern`."""

    method: str
    pattern: re.Pattern[str]
    status: int
    headers: dict[str, str]
    body: Any  # JSON, text, or a callable (who, request id) -> JSON for bodies that name the caller
    remaining: int
    after: bool = False  # carry the request out first, then answer with the fault (a response lost on the way)
    body_contains: bytes | None = None  # only requests whose body holds this (one GraphQL operation, say)


class Faults:
    """Faults in injection order; the first one matching a request answers it."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def take(self, method: str, path: str, body: bytes = b"") -> Fault | None:
        """The fault for this request, counted as used (dropped when spent), or None."""
        with self._lock:
            for fault in self._faults:
                if fault.method in ("*", method.upper()) and fault.pattern.fullmatch(path) and (
                    fault.body_contains is None or fault.body_contains in body
                ):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> int:
        """How many injected answers are still to be given."""
        with self._lock:
            return sum(f.remaining for f in self._faults)


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def primary_limit_body(who: str, rid: str, status: int = 403) -> dict[str, Any]:
    return {"message": f"API rate limit exceeded for {who}. If you reach out to GitHub Support for help, please "
                       f"include the request ID {rid} and timestamp {_stamp()}.",
            "documentation_url": PRIMARY_DOCS, "status": str(status)}


def graphql_rate_limited_body(who: str, error_type: str = "RATE_LIMITED") -> dict[str, Any]:
    """GraphQL's answer (HTTP 200) to a spent primary limit; `error_type` "RATE_LIMIT" gives the newer shape."""
    if error_type == "RATE_LIMIT":
        return {"errors": [{"type": "RATE_LIMIT", "code": "graphql_rate_limit",
                            "message": f"API rate limit already exceeded for {who}."}]}
    return {"errors": [{"type": error_type, "message": f"API rate limit exceeded for {who}."}]}


def spent_limit_headers(reset: int, resource: str, limit: int = LIMITS["installation"]) -> dict[str, str]:
    """The x-ratelimit-* headers of a window with nothing left."""
    return {"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": "0", "x-ratelimit-used": str(limit),
            "x-ratelimit-reset": str(reset), "x-ratelimit-resource": resource}


def default_body(status: int, headers: dict[str, str], *, who: str, rid: str) -> dict[str, Any]:
    """What GitHub sends with this status and these headers when the caller gave no body."""
    lower = {k.lower(): v for k, v in headers.items()}
    if status in (403, 429) and lower.get("x-ratelimit-remaining") == "0":
        return primary_limit_body(who, rid, status)
    if status in (403, 429):
        return {"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
                           f"again. If you reach out to GitHub Support for help, please include the request ID {rid}.",
                "documentation_url": SECONDARY_DOCS}
    if status in (500, 502):
        return {"message": "Server Error"}
    return {"message": HTTPStatus(status).phrase, "status": str(status)}


def fault_headers(status: int, headers: dict[str, str], resource: str = "core") -> dict[str, str]:
    """The caller's headers, completed like GitHub's for a primary limit (remaining 0)."""
    lower = {k.lower(): v for k, v in headers.items()}
    if status in (403, 429) and lower.get("x-ratelimit-remaining") == "0":
        limit = lower.get("x-ratelimit-limit", str(LIMITS["installation"]))
        lower = {"x-ratelimit-limit": limit, "x-ratelimit-used": limit, "x-ratelimit-resource": resource,
                 "x-ratelimit-reset": str(int(time.time()) + WINDOW_S), **lower}
    return lower


class RateLimits:
    """Primary rate-limit windows: (kind, who, resource) -> [window start, requests used]."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str, str], list[float]] = {}
        self._lock = threading.Lock()

    def charge(self, kind: str, who: str, resource: str) -> tuple[dict[str, str], bool]:
        """Count one request; returns its headers and whether the limit was already spent (then not counted)."""
        now, limit = time.time(), LIMITS[kind]
        with self._lock:
            window = self._windows.setdefault((kind, who, resource), [now, 0])
            if now >= window[0] + WINDOW_S:
                window[:] = [now, 0]
            exceeded = window[1] >= limit
            if not exceeded:
                window[1] += 1
            used = int(window[1])
            reset = int(window[0] + WINDOW_S)
        return {"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": str(limit - used),
                "x-ratelimit-reset": str(reset), "x-ratelimit-used": str(used),
                "x-ratelimit-resource": resource}, exceeded

    def spend(self, kind: str, who: str, resource: str, used: int) -> None:
        """Set how much of the current window is used (for tests of a nearly spent budget)."""
        with self._lock:
            self._windows[(kind, who, resource)] = [time.time(), used]
