"""The resolver error GitHub reports with a top-level `type`, shared by the GraphQL resolver modules."""

from __future__ import annotations


class GitHubGraphQLError(Exception):
    """A resolver error GitHub reports with a top-level `type` (NOT_FOUND, STALE_DATA, FORBIDDEN, ...)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.type = error_type
        self.message = message
