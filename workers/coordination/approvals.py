"""Which head commits of pull requests from forks someone allowed to run (`/retrain ok-to-test`).

An approval names one head commit: what a fork's author pushes after it is code nobody has looked at, so
it needs approving again (Prow's `ok-to-test` stays on a pull request; keeping it per commit is the
stricter reading, and costs one comment per push).
"""

from __future__ import annotations

import redis

APPROVAL_KEY = "retrain:approved:{repo}:{number}:{sha}"
APPROVAL_TTL_S = 90 * 24 * 3600  # a pull request left alone this long is approved again


class PullApprovals:
    def __init__(self, client: redis.Redis, ttl_s: int = APPROVAL_TTL_S) -> None:
        self._redis = client
        self._ttl_s = ttl_s

    def approve(self, repo: str, number: int, head_sha: str, by: str) -> None:
        self._redis.set(APPROVAL_KEY.format(repo=repo, number=number, sha=head_sha), by, ex=self._ttl_s)

    def approved_by(self, repo: str, number: int, head_sha: str) -> str | None:
        """Who approved this head commit, or None when nobody did."""
        who = self._redis.get(APPROVAL_KEY.format(repo=repo, number=number, sha=head_sha))
        return who.decode() if isinstance(who, bytes) else who
