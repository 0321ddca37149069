"""Check runs: create, update and get, with the rules GitHub's own handlers and CheckRun model apply.

What GitHub does, and the emulator with it:
- `head_sha` is resolved like any ref (branch, tag, sha); one that names no commit is 422
  "No commit found for SHA: <head_sha>".
- A `conclusion` sets `status` to completed; `completed_at` defaults to the time of completion and
  `started_at` to the time of creation.
- `conclusion: stale` is refused (only GitHub sets it): 422 'Invalid request.\\n\\nstale is not a member
  of ["success", ...].' (text seen from a live call, quoted in a public project's notes).
- On update, the schema's anyOf refuses `status` waiting/requested/pending and `status: completed`
  without a `conclusion`; the wording is the json_schema gem's, as seen from a live call for waiting
  (the completed-without-conclusion text is derived from the same rules).
- An `output` needs `title` and `summary`, on update too (the published description marks only summary
  required there, and says "**Required**." in title's description; GitHub answers 422): 'Invalid
  request.\n\n"title" wasn't supplied.', the json_schema gem's wording for a missing property as seen
  from live calls for other fields ('"annotation_level", "path" weren't supplied.', humanmade/linter-bot#71).
- The model refuses a completed run, or one with `completed_at`, that has no conclusion: 422
  "Validation Failed" with errors [{resource: CheckRun, code: missing_field, field: conclusion}] (the
  `errors` item is Rails' presence error in GitHub's usual mapping; not seen from a live call).
- An update replaces `output.text` with what it sends (none: null), keeps title and summary unless
  sent, appends annotations and replaces actions, as GitHub's update handler does.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .auth import DEFAULT_INSTALLATION_PERMISSIONS
from .openapi import Operation
from .rest import Handler, fail, installation_token, not_found, read_body, refuse_body, visible_repo
from .state import HTML, RepoState, next_id, node_id, now_iso, user_json

if TYPE_CHECKING:
    from .emulator import GitHubEmulator

SETTABLE_CONCLUSIONS = ["success", "failure", "neutral", "cancelled", "timed_out", "action_required", "skipped"]
API_STATUSES = ["queued", "in_progress", "completed"]
MAX_TEXT_BYTES = 65535


def _quoted(values: list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def integration_json(emu: GitHubEmulator) -> dict[str, Any]:
    """The App as check runs show it (`integration`)."""
    slug = emu.bot_login.removesuffix("[bot]")
    app_id = int(emu.app_id) if emu.app_id.isdigit() else 1
    stamp = "2024-01-01T00:00:00Z"
    return {"id": app_id, "slug": slug, "node_id": node_id("A", emu.app_id), "client_id": f"Iv23li{slug[:14]}",
            "owner": user_json(emu.base_url, f"{slug}-dev"), "name": slug.capitalize(), "description": "",
            "external_url": f"{HTML}/apps/{slug}", "html_url": f"{HTML}/apps/{slug}", "created_at": stamp,
            "updated_at": stamp, "permissions": dict(DEFAULT_INSTALLATION_PERMISSIONS), "events": []}


def _when(op: Operation, body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise fail(op, 422, f'Invalid request.\n\n"{value}" is not a valid date-time for "{key}".') from None
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    now = dt.datetime.now(dt.UTC)
    return min(parsed.astimezone(dt.UTC), now).strftime("%Y-%m-%dT%H:%M:%SZ")  # never in the future


def _schema_errors(op: Operation, body: dict[str, Any], *, updating: bool) -> list[str]:
    """What GitHub's own request schema refuses beyond the published OpenAPI description."""
    lines: list[str] = []
    status, conclusion = body.get("status"), body.get("conclusion")
    if updating and status is not None:
        first = [] if status == "completed" else [f"{status} is not a member of {_quoted(['completed'])}."]
        first += [] if conclusion is not None else ['"conclusion" wasn\'t supplied.']
        second = [] if status in ("queued", "in_progress") else [
            f"{status} is not a member of {_quoted(['queued', 'in_progress'])}."]
        if first and second:
            top = [] if status in API_STATUSES else [f"{status} is not a member of {_quoted(API_STATUSES)}."]
            lines += ['No subschema in "anyOf" matched.', *top, *first, *second]
    if conclusion is not None and conclusion not in SETTABLE_CONCLUSIONS:
        lines.append(f"{conclusion} is not a member of {_quoted(SETTABLE_CONCLUSIONS)}.")
    output = body.get("output")
    if isinstance(output, dict):
        missing = [key for key in ("title", "summary") if key not in output]
        if missing:
            names = ", ".join(f'"{key}"' for key in missing)
            lines.append(f"{names} {'wasn' if len(missing) == 1 else 'weren'}'t supplied.")
        for key in ("summary", "text"):  # GitHub counts UTF-8 bytes here (github/docs#35252), not characters
            if isinstance(output.get(key), str) and len(output[key].encode()) > MAX_TEXT_BYTES:
                lines.append(f"{key} exceeds a maximum bytesize of {MAX_TEXT_BYTES}")
    return lines


async def _read(request: web.Request, emu: GitHubEmulator, op: Operation, *, updating: bool) -> dict[str, Any]:
    """The body, refused in GitHub's wording where its schema differs from the published one."""
    body, problems = await read_body(request, emu, op)
    lines = _schema_errors(op, body, updating=updating) if isinstance(body, dict) else []
    if lines:
        emu.violations.append(f"{request.method} {request.path}: GitHub refuses this check run body: "
                              + " ".join(lines))
        raise fail(op, 422, "Invalid request.\n\n" + "\n".join(lines))
    refuse_body(request, emu, op, problems)
    return body


def _model_check(op: Operation, emu: GitHubEmulator, request: web.Request, run: dict[str, Any]) -> None:
    """The CheckRun model: a completed run, or one with completed_at, needs a conclusion."""
    if run["conclusion"] is None and (run["status"] == "completed" or run["completed_at"] is not None):
        emu.violations.append(f"{request.method} {request.path}: check run completed without a conclusion")
        raise fail(op, 422, "Validation Failed",
                   errors=[{"resource": "CheckRun", "code": "missing_field", "field": "conclusion"}])


def _apply(op: Operation, run: dict[str, Any], body: dict[str, Any]) -> None:
    """Fields of a create or update body onto a check run, as GitHub's handlers copy them."""
    for key in ("name", "details_url", "external_id", "conclusion"):
        if body.get(key):
            run[key] = body[key]
    for key in ("started_at", "completed_at"):
        if when := _when(op, body, key):
            run[key] = when
    if body.get("conclusion"):
        run["status"] = "completed"
    elif body.get("status"):
        run["status"] = body["status"]
    output = body.get("output") or {}
    out = run["output"]
    out["title"] = output.get("title") or out["title"]
    out["summary"] = output.get("summary") or out["summary"]
    out["text"] = output.get("text")
    out["annotations_count"] += len(output.get("annotations") or [])
    if run["conclusion"] is not None and run["completed_at"] is None:
        run["completed_at"] = now_iso()


def _find(repo: RepoState, op: Operation) -> dict[str, Any]:
    raw = op.params["check_run_id"]
    run = repo.check_runs.get(int(raw)) if raw.isdigit() else None
    if run is None:
        raise not_found()
    return run


async def create_check_run(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    repo = visible_repo(emu, installation_token(request, emu), op, ("checks",), "write")
    body = await _read(request, emu, op, updating=False)
    head = await asyncio.to_thread(repo.git.resolve, body["head_sha"])
    if head is None:
        raise fail(op, 422, f"No commit found for SHA: {body['head_sha']}")
    run_id = next_id()
    api_url = f"{emu.base_url}/repos/{repo.full_name}/check-runs/{run_id}"
    run: dict[str, Any] = {
        "id": run_id, "head_sha": head, "node_id": node_id("CR", str(run_id)), "external_id": "",
        "url": api_url, "html_url": f"{HTML}/{repo.full_name}/runs/{run_id}",
        "details_url": integration_json(emu)["external_url"], "status": "queued", "conclusion": None,
        "started_at": now_iso(), "completed_at": None,
        "output": {"title": None, "summary": None, "text": None, "annotations_count": 0,
                   "annotations_url": f"{api_url}/annotations"},
        "name": body["name"], "check_suite": {"id": repo.check_suites.setdefault(head, next_id())},
        "app": integration_json(emu), "pull_requests": []}
    _apply(op, run, body)
    _model_check(op, emu, request, run)
    repo.check_runs[run_id] = run
    repo.check_history[run_id] = [copy.deepcopy(body)]
    return web.json_response(run, status=201)


async def update_check_run(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    repo = visible_repo(emu, installation_token(request, emu), op, ("checks",), "write")
    run = _find(repo, op)
    body = await _read(request, emu, op, updating=True)
    updated = copy.deepcopy(run)
    _apply(op, updated, body)
    _model_check(op, emu, request, updated)
    run.clear()
    run.update(updated)
    repo.check_history[run["id"]].append(copy.deepcopy(body))
    return web.json_response(run)


async def get_check_run(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    repo = visible_repo(emu, installation_token(request, emu), op, ("checks",), "read")
    return web.json_response(_find(repo, op))


HANDLERS: dict[tuple[str, str], Handler] = {
    ("POST", "/repos/{owner}/{repo}/check-runs"): create_check_run,
    ("PATCH", "/repos/{owner}/{repo}/check-runs/{check_run_id}"): update_check_run,
    ("GET", "/repos/{owner}/{repo}/check-runs/{check_run_id}"): get_check_run,
}
