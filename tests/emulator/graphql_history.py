"""`Commit.history(first, path)`: the commits reachable from one commit, newest first, optionally only those
that changed a path, as `git log -- <path>` lists them (GitHub follows no renames here either).

Only `first` pages (at most 100, as GitHub allows); `after`, `author`, `since` and `until` are refused
rather than silently ignored, so a caller that needs them fails here first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .graphql_errors import GitHubGraphQLError
from .state import RepoState

MAX_PAGE = 100


def commit_history(repo: RepoState, oid: str, commit: Callable[[str], dict[str, Any]], *, first: int | None = None,
                   path: str | None = None, **unsupported: Any) -> dict[str, Any]:
    if unsupported:
        raise GitHubGraphQLError("INTERNAL", f"the emulator does not implement history({', '.join(unsupported)})")
    if first is None or not 1 <= first <= MAX_PAGE:
        raise GitHubGraphQLError(
            "MISSING_PAGINATION_BOUNDARIES" if first is None else "EXCESSIVE_PAGINATION",
            f"Requesting {first} records on the `history` connection exceeds the `first` limit of 100 records."
            if first is not None else "You must provide a `first` or `last` value to properly paginate the "
            "`history` connection.")
    args = ["rev-list", oid] + (["--", path] if path else [])
    oids = repo.git.git(*args).stdout.decode().split()
    nodes = [commit(o) for o in oids[:first]]
    return {"nodes": nodes, "totalCount": len(oids),
            "pageInfo": {"hasNextPage": len(oids) > first, "hasPreviousPage": False,
                         "startCursor": None, "endCursor": None},
            "edges": [{"node": n, "cursor": f"{n['oid']} {i}"} for i, n in enumerate(nodes)]}
