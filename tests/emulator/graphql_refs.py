"""GraphQL resolvers for `Repository.refs` (a paginated connection of refs) and `Commit.file` (a TreeEntry
and its Blob or Tree), on the real git repository.

What GitHub does, and where it comes from:
- every connection needs `first` or `last`, each at most 100 (GitHub's "Using pagination in the GraphQL
  API" and "Rate limits and node limits"); the error types MISSING_PAGINATION_BOUNDARIES,
  EXCESSIVE_PAGINATION and INVALID_CURSOR_ARGUMENTS and their wording are as GitHub's answers are quoted
  in public projects, not verified against api.github.com;
- `refs(refPrefix:)` names each ref relative to the prefix (`main` for `refs/heads/main`, `prefix`
  "refs/heads/"); refs come in alphabetical order, the emulator's only order; `query` keeps refs whose
  name contains it;
- `Blob.text` is null for a binary blob (the schema's description) and cut at 512,000 bytes with
  `isTruncated: true` (reported by a public issue, sveltia/sveltia-cms#950, "exactly 512,000 bytes";
  GitHub documents no figure). Binary here is git's rule: a NUL byte in the first 8,000 bytes.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Callable
from typing import Any

from .graphql_errors import GitHubGraphQLError
from .state import HTML, RepoState, node_id

MAX_PAGE = 100
TEXT_LIMIT = 512_000
BINARY_SNIFF = 8_000
MakeRef = Callable[[str, str, str], dict[str, Any]]  # (prefix, full name, commit oid) -> a Ref


def _cursor(name: str) -> str:
    return base64.b64encode(f"ref:{name}".encode()).decode()


def _from_cursor(cursor: str) -> str:
    try:
        text = base64.b64decode(cursor, validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        text = ""
    if not text.startswith("ref:"):
        raise GitHubGraphQLError("INVALID_CURSOR_ARGUMENTS", f"`{cursor}` does not appear to be a valid cursor.")
    return text.removeprefix("ref:")


def _check_bounds(first: int | None, last: int | None) -> None:
    if first is None and last is None:
        raise GitHubGraphQLError("MISSING_PAGINATION_BOUNDARIES", "You must provide a `first` or `last` value to "
                                 "properly paginate the `refs` connection.")
    for name, value in (("first", first), ("last", last)):
        if value is not None and value > MAX_PAGE:
            raise GitHubGraphQLError("EXCESSIVE_PAGINATION", f"Requesting {value} records on the `refs` connection "
                                     f"exceeds the `{name}` limit of {MAX_PAGE} records.")
        if value is not None and value < 0:
            raise GitHubGraphQLError("INVALID_PAGINATION", f"`{name}` on the `refs` connection cannot be negative.")


def list_refs(repo: RepoState, prefix: str) -> list[tuple[str, str]]:
    """(full name, commit oid) of the refs under `prefix`, alphabetical (for-each-ref's order, which is
    also Python's for UTF-8 names)."""
    out = repo.git.git("for-each-ref", "--format=%(objecttype) %(objectname) %(refname)", prefix).stdout
    refs = []
    for line in out.decode(errors="surrogateescape").splitlines():
        kind, oid, name = line.split(" ", 2)
        if not name.startswith(prefix):
            continue
        if kind != "commit":  # an annotated tag: its Tag object is not modelled
            raise NotImplementedError(f"the emulator's refs resolver does not model {kind} targets ({name})")
        refs.append((name, oid))
    return refs


def refs_connection(
    repo: RepoState, make_ref: MakeRef, *, refPrefix: str, first: int | None = None, last: int | None = None,
    after: str | None = None, before: str | None = None, query: str | None = None,
    orderBy: dict[str, Any] | None = None, direction: str | None = None,
) -> dict[str, Any]:
    """A RefConnection over the refs under `refPrefix`, the window chosen as Relay's pagination algorithm
    does (after/before, then first, then last). hasNextPage/hasPreviousPage say whether any ref lies past
    the window's end or before its start."""
    _check_bounds(first, last)
    order = (orderBy or {}).get("field", "ALPHABETICAL"), (orderBy or {}).get("direction", direction or "ASC")
    if order != ("ALPHABETICAL", "ASC"):
        raise NotImplementedError(f"the emulator lists refs alphabetically, ascending, only (asked {orderBy})")
    refs = [(n, o) for n, o in list_refs(repo, refPrefix) if query is None or query in n.removeprefix(refPrefix)]
    names = [n for n, _ in refs]
    start = bisect.bisect_right(names, _from_cursor(after)) if after else 0
    end = bisect.bisect_left(names, _from_cursor(before)) if before else len(refs)
    window = list(range(start, max(start, end)))
    if first is not None:
        window = window[:first]
    if last is not None:
        window = window[max(len(window) - last, 0):] if last else []
    edges = [{"cursor": _cursor(names[i]), "node": make_ref(refPrefix, *refs[i])} for i in window]
    return {
        "edges": edges, "nodes": [e["node"] for e in edges], "totalCount": len(refs),
        "pageInfo": {
            "hasNextPage": (window[-1] + 1 if window else start) < len(refs),
            "hasPreviousPage": (window[0] if window else start) > 0,
            "startCursor": edges[0]["cursor"] if edges else None,
            "endCursor": edges[-1]["cursor"] if edges else None,
        },
    }


Repository = Callable[[], dict[str, Any]]  # the Repository object, built in graphql_api


def tree_entry(repo: RepoState, commit: str, path: str, repository: Repository) -> dict[str, Any] | None:
    """`Commit.file(path:)`: the entry at `path`, None when there is none."""
    if not path.strip("/"):
        return None
    found = repo.git.entry(commit, path)
    if found is None:
        return None
    objects: dict[str, Callable[[], dict[str, Any] | None]] = {
        "blob": lambda: _blob(repo, found.oid, found.size, repository),
        "tree": lambda: _git_object(repo, "Tree", found.oid, repository),
        "commit": lambda: None,  # a submodule: its commit lives in another repository
    }
    name = found.path.rsplit("/", 1)[-1]
    return {
        "__typename": "TreeEntry", "name": name, "path": found.path, "mode": int(found.mode, 8), "type": found.kind,
        "oid": found.oid, "size": found.size, "extension": f".{name.rsplit('.', 1)[1]}" if "." in name else None,
        "object": lambda _info: objects[found.kind](),
    }


def _git_object(repo: RepoState, typename: str, oid: str, repository: Repository) -> dict[str, Any]:
    kind = typename.lower()
    return {
        "__typename": typename, "oid": oid, "abbreviatedOid": oid[:7], "id": node_id(typename[0], oid),
        "commitUrl": f"{HTML}/{repo.full_name}/{kind}/{oid}", "commitResourcePath": f"/{repo.full_name}/{kind}/{oid}",
        "repository": lambda _i: repository(),
    }


def _blob(repo: RepoState, oid: str, size: int, repository: Repository) -> dict[str, Any]:
    data = repo.git.blob(oid)
    binary = b"\0" in data[:BINARY_SNIFF]
    return {
        **_git_object(repo, "Blob", oid, repository), "byteSize": size, "isBinary": binary,
        "isTruncated": len(data) > TEXT_LIMIT,
        "text": None if binary else data[:TEXT_LIMIT].decode("utf-8", errors="ignore"),
    }
