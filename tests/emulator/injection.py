"""Injected faults and rate limits: the GitHubEmulator methods a test calls to make GitHub fail as it does
(shapes and their sources are in faults.py)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from .faults import Fault, Faults, RateLimits, graphql_rate_limited_body, spent_limit_headers


class FaultInjection:
    """Mixed into GitHubEmulator, whose `faults` and `rate_limits` the server consults on every request."""

    faults: Faults
    rate_limits: RateLimits

    def inject_fault(self, method: str, path_pattern: str, status: int, *, headers: dict[str, str] | None = None,
                     body: dict[str, Any] | str | Callable[[str, str], Any] | None = None, times: int = 1,
                     after: bool = False, body_contains: str | None = None) -> None:
        """Answer the next `times` requests whose method is `method` ("*": any) and whose path fully matches
        the regex `path_pattern` with `status`, `headers` and `body` instead of handling them (a callable
        body is called with who the caller is, e.g. "installation ID 42", and the request id).

        Without a body GitHub's is used: 403/429 with x-ratelimit-remaining "0" the primary-limit message
        (missing x-ratelimit-* headers are filled in), other 403/429 the secondary-limit message, 500/502
        {"message": "Server Error"}. Such requests are recorded (RecordedCall.fault) and change nothing;
        with `after`, the request is carried out first and only its answer is the fault (a response lost on
        the way back, the case a retry must not repeat). `body_contains` narrows the fault to requests
        whose body holds that text (one GraphQL operation, e.g. "createCommitOnBranch"). Status
        `DROP_CONNECTION` (0) sends no answer at all: the connection is aborted. Faults apply on the upload
        host too (`POST /repos/{o}/{r}/releases/{id}/assets`, which only it serves), matched on method and path
        alone: its bodies are files, never read whole.
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        self.faults.add(Fault(method.upper(), re.compile(path_pattern), status, dict(headers or {}), body, times,
                              after=after, body_contains=body_contains.encode() if body_contains else None))

    def inject_primary_rate_limit(self, method: str, path_pattern: str, *, reset_in_s: int = 60,
                                  status: int = 403, times: int = 1) -> int:
        """A spent primary limit (remaining 0, reset `reset_in_s` from now); returns the reset epoch."""
        reset = int(time.time()) + reset_in_s
        self.inject_fault(method, path_pattern, status, times=times,
                          headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)})
        return reset

    def inject_secondary_rate_limit(self, method: str, path_pattern: str, *, retry_after_s: int | None = 60,
                                    status: int = 403, times: int = 1) -> None:
        """A secondary limit (403 or 429, with `retry-after` unless None)."""
        headers = {} if retry_after_s is None else {"retry-after": str(retry_after_s)}
        self.inject_fault(method, path_pattern, status, headers=headers, times=times)

    def inject_graphql_secondary_limit(self, *, times: int = 1, retry_after_s: int | None = 60, status: int = 403,
                                       body_contains: str | None = None) -> None:
        """The next `times` POST /graphql (only those holding `body_contains`, e.g. "createCommitOnBranch")
        hit a secondary limit: `status` (GitHub's documentation says 200 or 403) with GitHub's secondary-limit
        body (faults.py) and `retry-after: <retry_after_s>` unless None (then the documented rule is to wait
        at least a minute). Nothing is carried out.

        For a client: gidgethub's `graphql()` raises BadGraphQLRequest(403, body) for it, which carries no
        headers, so a client that wants `retry-after` has to read it where the response passes (e.g.
        MeteredGitHubAPI._request); the message starts "You have exceeded a secondary rate limit".
        """
        headers = {} if retry_after_s is None else {"retry-after": str(retry_after_s)}
        self.inject_fault("POST", "/graphql", status, headers=headers, times=times, body_contains=body_contains)

    def inject_graphql_primary_limit(self, *, times: int = 1, reset_in_s: int = 60, error_type: str = "RATE_LIMITED",
                                     body_contains: str | None = None, after: bool = False) -> int:
        """The next `times` POST /graphql find the installation's GraphQL points spent: HTTP 200 with
        {"errors": [{"type": "RATE_LIMITED", "message": "API rate limit exceeded for installation ID <id>."}]}
        and x-ratelimit-remaining 0, x-ratelimit-reset `reset_in_s` from now, x-ratelimit-resource graphql.
        Returns the reset epoch. `error_type="RATE_LIMIT"` gives the newer shape (with code
        "graphql_rate_limit"); `after` carries the request out first (a mutation applied, its answer lost).

        For a client: gidgethub's `graphql()` raises QueryError(body) (no headers on it), having set
        `gh.rate_limit` from this response's headers first, so `gh.rate_limit.reset_datetime` is the time to
        wait for. See faults.py for where these shapes come from.
        """
        reset = int(time.time()) + reset_in_s
        self.inject_fault("POST", "/graphql", 200, headers=spent_limit_headers(reset, "graphql"), times=times,
                          body=lambda who, _rid: graphql_rate_limited_body(who, error_type),
                          body_contains=body_contains, after=after)
        return reset

    def clear_faults(self) -> None:
        self.faults.clear()

    def set_rate_limit_remaining(self, installation_id: int, remaining: int, *, resource: str = "core") -> None:
        """Start a fresh window for the installation with only `remaining` requests left (0: every call 403s)."""
        self.rate_limits.spend("installation", str(installation_id), resource, 5000 - remaining)

