"""List endpoints the App reads to find what an earlier attempt made: an issue's comments and a commit's
check runs, paged as GitHub pages them.

From GitHub's REST docs ("List issue comments", "List check runs for a Git reference", "Using pagination
in the REST API"): `per_page` defaults to 30 and is capped at 100, `page` counts from 1, the next page is
named in a `Link` header; comments come oldest first and `since` keeps those updated at or after it;
check runs come newest first, filtered by `check_name` and by `filter` (`latest`, the default, keeps the
newest run of each name; `all` keeps every run).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from .openapi import Operation
from .rest import Handler, fail, installation_token, visible_repo

if TYPE_CHECKING:
    from .emulator import GitHubEmulator

DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 100


def _number(raw: str | None, default: int, low: int, high: int) -> int:
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        value = default
    return max(low, min(value, high))


def _page(request: web.Request, items: list[Any]) -> tuple[list[Any], dict[str, str]]:
    """One page of `items` and its `Link` header (next and last pages, as GitHub names them)."""
    per_page = _number(request.query.get("per_page"), DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)
    page = _number(request.query.get("page"), 1, 1, 10**6)
    last = max(1, -(-len(items) // per_page))
    chosen = items[(page - 1) * per_page : page * per_page]
    if page >= last:
        return chosen, {}

    def url(n: int) -> str:
        return f"{request.url.with_query(None)}?{urlencode({**request.query, 'per_page': per_page, 'page': n})}"

    return chosen, {"Link": f'<{url(page + 1)}>; rel="next", <{url(last)}>; rel="last"'}


def _parse_since(op: Operation, raw: str | None) -> dt.datetime | None:
    if raw is None:
        return None
    try:
        since = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise fail(op, 422, f'Invalid request.\n\n"{raw}" is not a valid date-time for "since".') from None
    return since if since.tzinfo else since.replace(tzinfo=dt.UTC)


async def list_issue_comments(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    repo = visible_repo(emu, installation_token(request, emu), op, ("issues", "pull_requests"), "read")
    since = _parse_since(op, request.query.get("since"))
    raw = op.params["issue_number"]
    comments = list(repo.comments.get(int(raw), [])) if raw.isdigit() else []
    if since is not None:
        comments = [c for c in comments
                    if dt.datetime.fromisoformat(c["updated_at"].replace("Z", "+00:00")) >= since]
    page, headers = _page(request, sorted(comments, key=lambda c: c["id"]))
    return web.json_response(page, headers=headers)


async def list_check_runs_for_ref(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    repo = visible_repo(emu, installation_token(request, emu), op, ("checks",), "read")
    sha = await asyncio.to_thread(repo.git.resolve, op.params["ref"])
    if sha is None:
        raise fail(op, 422, f"No commit found for SHA: {op.params['ref']}")
    runs = sorted((r for r in repo.check_runs.values() if r["head_sha"] == sha), key=lambda r: r["id"], reverse=True)
    name = request.query.get("check_name")
    if name is not None:
        runs = [r for r in runs if r["name"] == name]
    status = request.query.get("status")
    if status is not None:
        runs = [r for r in runs if r["status"] == status]
    which = request.query.get("filter", "latest")
    if which not in ("latest", "all"):
        raise fail(op, 422, f'Invalid request.\n\n{which} is not a member of ["latest", "all"].')
    if which == "latest":
        newest: dict[str, dict[str, Any]] = {}
        for run in runs:
            newest.setdefault(run["name"], run)
        runs = list(newest.values())
    page, headers = _page(request, runs)
    return web.json_response({"total_count": len(runs), "check_runs": page}, headers=headers)


HANDLERS: dict[tuple[str, str], Handler] = {
    ("GET", "/repos/{owner}/{repo}/issues/{issue_number}/comments"): list_issue_comments,
    ("GET", "/repos/{owner}/{repo}/commits/{ref}/check-runs"): list_check_runs_for_ref,
}
