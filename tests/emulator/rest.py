"""Handlers for the REST operations the App uses, keyed by their OpenAPI path template.

Each handler checks what GitHub checks, in GitHub's order: credentials (401), whether the token can
see the repository (404), the token's permission (403), whether the issue or comment named in the path
exists (404), then the body (400/422).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .auth import LEVELS, AuthError, InstallationToken, bearer
from .openapi import Operation
from .state import RepoState, comment_json, content_entry, file_json, now_iso, permission_json, reaction_json

if TYPE_CHECKING:
    from .apps import RegisteredApp
    from .emulator import GitHubEmulator

DOCS = "https://docs.github.com/rest"
RAW_MEDIA = {"application/vnd.github.raw", "application/vnd.github.raw+json", "application/vnd.github.v3.raw"}
CODELOAD_TTL_S = 300
MAX_COMMENT_CHARS = 65_536  # "Body is too long (maximum is 65536 characters)"
Handler = Callable[[web.Request, "GitHubEmulator", Operation], Awaitable[web.StreamResponse]]


class GitHubError(Exception):
    """An error answer: status plus GitHub's JSON body."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"message": message, "documentation_url": DOCS, **extra, "status": str(status)}


def not_found() -> GitHubError:
    return GitHubError(404, "Not Found")


def docs_url(op: Operation) -> str:
    """The operation's documentation page, which GitHub names in its error bodies."""
    url = op.spec.get("externalDocs", {}).get("url")
    return url if isinstance(url, str) else DOCS


def fail(op: Operation, status: int, message: str, **extra: Any) -> GitHubError:
    """An error answer naming the operation's documentation, as GitHub's handlers send them."""
    return GitHubError(status, message, documentation_url=docs_url(op), **extra)


def require_app_jwt(request: web.Request, emu: GitHubEmulator) -> RegisteredApp:
    """Endpoints under /app take only an App's JWT (401 with GitHub's wording otherwise); the App it names."""
    credential = bearer(request.headers.get("Authorization"))
    try:
        return emu.authenticate_app(credential or "")
    except AuthError as exc:
        raise GitHubError(401, exc.message) from exc


def installation_token(request: web.Request, emu: GitHubEmulator) -> InstallationToken:
    """The live installation token on this request, or 401 as GitHub answers it."""
    credential = bearer(request.headers.get("Authorization"))
    if credential is None:
        raise GitHubError(401, "Requires authentication")
    try:
        return emu.tokens.lookup(credential)
    except AuthError as exc:
        raise GitHubError(401, exc.message) from exc


def visible_repo(emu: GitHubEmulator, token: InstallationToken, op: Operation,
                 need: tuple[str, ...], level: str) -> RepoState:
    """The repository in the path if the token can see it (else 404) and holds one of `need` (else 403)."""
    repo = emu.find_repo(token, f"{op.params['owner']}/{op.params['repo']}")
    if repo is None:
        raise not_found()
    if not any(token.allows(p, level) for p in need):
        raise GitHubError(403, "Resource not accessible by integration")
    return repo


async def read_body(request: web.Request, emu: GitHubEmulator, op: Operation) -> tuple[Any, list[str]]:
    """The JSON body (400 if it is not JSON) and its problems against the operation's requestBody."""
    raw = await request.read()
    body: Any = None
    if raw.strip():
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise GitHubError(400, "Problems parsing JSON") from exc
    return body, emu.spec.request_body_errors(op, body, has_body=bool(raw.strip()))


def refuse_body(request: web.Request, emu: GitHubEmulator, op: Operation, problems: list[str], *,
                lenient: bool = False) -> None:
    """Record schema problems as a violation and answer 422 (unless `lenient`)."""
    if problems:
        emu.violations.append(f"{op.method} {request.path}: request body violates {emu.spec.source}: "
                              + "; ".join(problems))
        if not lenient:
            raise fail(op, 422, "Invalid request.\n\n" + "\n".join(problems))


async def read_json(request: web.Request, emu: GitHubEmulator, op: Operation, *, lenient: bool = False) -> Any:
    """The JSON body, validated against the operation's documented requestBody (422 otherwise).

    `lenient`: for the operations whose GitHub handler skips schema validation and applies its own checks
    (git blobs and trees), a violation is recorded but the body is handed on.
    """
    body, problems = await read_body(request, emu, op)
    refuse_body(request, emu, op, problems, lenient=lenient)
    return body


async def create_token(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    app = require_app_jwt(request, emu)
    raw_id = op.params["installation_id"]
    inst = emu.installations.get(int(raw_id)) if raw_id.isdigit() else None
    if inst is None or app.id != emu.app_id:  # installations are the emulator's own App's
        raise not_found()
    body = await read_json(request, emu, op) or {}
    repos: set[str] | None = None
    if body.get("repositories") is not None or body.get("repository_ids") is not None:
        by_name = {n.split("/", 1)[1]: n for n in inst.repositories}
        by_id = {emu.repos[n].id: n for n in inst.repositories}
        wanted = [by_name.get(n) for n in body.get("repositories") or []]
        wanted += [by_id.get(i) for i in body.get("repository_ids") or []]
        if None in wanted:
            raise GitHubError(422, "There is at least one repository that does not exist or is not "
                              "accessible to the parent installation.")
        repos = {n for n in wanted if n}
    perms = body.get("permissions")
    if perms is not None:
        too_much = [k for k, v in perms.items() if LEVELS.get(v, 99) > LEVELS.get(inst.permissions.get(k, ""), 0)]
        if too_much:
            raise GitHubError(422, "The permissions requested are not granted to this installation.")
    token = emu.tokens.mint(inst, repositories=repos, permissions=perms)
    return web.json_response({"token": token.token, "expires_at": token.expires_at_iso,
                              "permissions": token.permissions,
                              "repository_selection": "selected"}, status=201)


async def collaborator_permission(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    """A user's role on the repository (`role_name`) and its legacy `permission`.

    A login that names no user GitHub knows is 404 (the description documents 404 for this operation;
    app/github/client.py reads it as no permission). A known user with no role on the repository is not an error:
    200 with permission and role_name "none" on a private repository, and "read" on a public one, where
    everyone may read (public projects see "read" for every non-collaborator:
    aws-ia/cloudformation-github-resource-providers#14). Roles through teams or the organization are not
    emulated: a role is what set_permission gave.
    """
    repo = visible_repo(emu, installation_token(request, emu), op, ("metadata",), "read")
    login = op.params["username"]
    if not emu.knows_user(login):
        raise fail(op, 404, "Not Found")
    role = repo.roles.get(login) or ("none" if repo.private else "read")
    return web.json_response(permission_json(emu.base_url, login, role))


def _number(raw: str) -> int | None:
    return int(raw) if raw.isdigit() else None


def existing_issue(repo: RepoState, op: Operation) -> int:
    """The issue (or pull request) in the path if it exists, else 404 as GitHub answers it."""
    number = _number(op.params["issue_number"])
    if number is None or number not in repo.issues:
        raise not_found()
    return number


def existing_comment(repo: RepoState, op: Operation) -> int:
    """The issue comment in the path if it exists on this repository, else 404."""
    comment_id = _number(op.params["comment_id"])
    if comment_id is None or comment_id not in repo.comment_issues:
        raise not_found()
    return comment_id


async def create_reaction(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    repo = visible_repo(emu, installation_token(request, emu), op, ("issues", "pull_requests"), "write")
    comment_id = existing_comment(repo, op)
    body = await read_json(request, emu, op)
    existing = [r for r in repo.reactions.get(comment_id, []) if r["content"] == body["content"]]
    if existing:  # GitHub answers 200 with the reaction the same user already left
        return web.json_response(existing[0], status=200)
    reaction = reaction_json(body["content"], emu.bot_user())
    repo.reactions.setdefault(comment_id, []).append(reaction)
    return web.json_response(reaction, status=201)


def check_comment_length(request: web.Request, emu: GitHubEmulator, op: Operation, text: str) -> None:
    """GitHub's IssueComment model refuses a body over 65,536 characters (counted as characters, not bytes).

    The body is the one seen from GitHub since 2021, quoted in public issues (reg-viz/reg-actions#123,
    easybuilders/easybuild-easyconfigs#24647, 2025): 422 {"message": "Validation Failed", "errors":
    [{"resource": "IssueComment", "code": "unprocessable", "field": "data", "message": "Body is too long
    (maximum is 65536 characters)"}], "documentation_url": ".../issues/comments#create-an-issue-comment"}.
    Before that GitHub said code "custom", field "body", "body is too long (maximum is 65536 characters)"
    (danger/danger#424, 2016); a client should look at the status, not at these words.
    """
    if len(text) <= MAX_COMMENT_CHARS:
        return
    emu.violations.append(f"{op.method} {request.path}: comment body of {len(text):,} characters is over "
                          f"GitHub's {MAX_COMMENT_CHARS:,}")
    raise fail(op, 422, "Validation Failed", errors=[{
        "resource": "IssueComment", "code": "unprocessable", "field": "data",
        "message": f"Body is too long (maximum is {MAX_COMMENT_CHARS} characters)"}])


async def create_comment(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    repo = visible_repo(emu, installation_token(request, emu), op, ("issues", "pull_requests"), "write")
    issue = existing_issue(repo, op)
    body = await read_json(request, emu, op)
    check_comment_length(request, emu, op, body["body"])
    comment = comment_json(emu.base_url, repo, issue, body["body"], emu.bot_user())
    repo.comments.setdefault(issue, []).append(comment)
    repo.comment_issues[comment["id"]] = issue  # so reactions on the App's own comments work
    return web.json_response(comment, status=201)


async def update_comment(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    """Edit a comment. The App edits only its own (it never needs more, so the emulator refuses the rest as a
    violation); the body's limit is the one creating a comment has."""
    repo = visible_repo(emu, installation_token(request, emu), op, ("issues", "pull_requests"), "write")
    comment_id = existing_comment(repo, op)
    issue = repo.comment_issues[comment_id]
    own = [c for c in repo.comments.get(issue, []) if c["id"] == comment_id]
    if not own:
        emu.violations.append(f"{op.method} {request.path}: the App edited a comment it did not write")
        raise fail(op, 403, "Resource not accessible by integration")
    body = await read_json(request, emu, op)
    check_comment_length(request, emu, op, body["body"])
    own[0].update(body=body["body"], updated_at=now_iso())
    return web.json_response(own[0])


def wants_raw(request: web.Request) -> bool:
    """Whether the Accept header asks for the raw media type (the bytes, not base64 in JSON)."""
    accept = {part.split(";")[0].strip() for part in request.headers.get("Accept", "").split(",")}
    return bool(accept & RAW_MEDIA)


async def get_contents(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    repo = visible_repo(emu, installation_token(request, emu), op, ("contents",), "read")
    ref = request.query.get("ref") or repo.default_branch
    commit = await asyncio.to_thread(repo.git.resolve, ref)
    if commit is None:
        raise GitHubError(404, f"No commit found for the ref {ref}")
    path = op.params["path"]
    entry = await asyncio.to_thread(repo.git.entry, commit, path)
    if entry is None:
        raise not_found()
    if entry.kind == "tree":
        entries = await asyncio.to_thread(repo.git.list_tree, commit, path)
        return web.json_response([content_entry(emu.base_url, repo, ref, e) for e in entries])
    data = await asyncio.to_thread(repo.git.blob, entry.oid)
    if wants_raw(request):
        return web.Response(body=data, content_type="application/vnd.github.raw")
    return web.json_response(file_json(emu.base_url, repo, ref, entry, data))


async def tarball(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    repo = visible_repo(emu, installation_token(request, emu), op, ("contents",), "read")
    ref = op.params.get("ref") or repo.default_branch
    sha = await asyncio.to_thread(repo.git.resolve, ref)
    if sha is None:
        raise not_found()
    one_time = secrets.token_urlsafe(24)
    emu.codeload[one_time] = (repo.full_name, sha, time.time() + CODELOAD_TTL_S)
    location = f"{emu.codeload_url}/{repo.full_name}/legacy.tar.gz/{sha}?token={one_time}"
    return web.Response(status=302, headers={"Location": location})


async def codeload(request: web.Request, emu: GitHubEmulator) -> web.StreamResponse:
    """The redirect target of a tarball request, on the archive host: a one-time token in the query.

    GitHub's codeload would ignore an Authorization header; the emulator refuses the request and records a
    violation, because a client that sends one has leaked the App's token to another host (following the
    redirect must drop it, as aiohttp and requests do when the origin changes).
    """
    if "Authorization" in request.headers:
        emu.violations.append(f"GET {request.path} on codeload.github.com: the request carries an Authorization "
                              "header (a token sent to another host)")
        return web.Response(status=400, text="400: Authorization is not accepted here")
    grant = emu.codeload.pop(request.query.get("token", ""), None)
    owner, name, sha = (request.match_info[k] for k in ("owner", "repo", "sha"))
    if grant is None or grant[0] != f"{owner}/{name}" or grant[1] != sha or grant[2] < time.time():
        return web.Response(status=404, text="404: Not Found")
    repo = emu.repos[grant[0]]
    prefix = f"{owner}-{name}-{sha[:7]}"
    data = await asyncio.to_thread(repo.git.archive, sha, prefix + "/")
    return web.Response(body=data, content_type="application/x-gzip",
                        headers={"Content-Disposition": f"attachment; filename={prefix}.tar.gz"})


HANDLERS: dict[tuple[str, str], Handler] = {
    ("POST", "/app/installations/{installation_id}/access_tokens"): create_token,
    ("GET", "/repos/{owner}/{repo}/collaborators/{username}/permission"): collaborator_permission,
    ("POST", "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions"): create_reaction,
    ("POST", "/repos/{owner}/{repo}/issues/{issue_number}/comments"): create_comment,
    ("PATCH", "/repos/{owner}/{repo}/issues/comments/{comment_id}"): update_comment,
    ("GET", "/repos/{owner}/{repo}/contents/{path}"): get_contents,
    ("GET", "/repos/{owner}/{repo}/tarball/{ref}"): tarball,
}
# Served although GitHub's OpenAPI description omits it; every use is still reported as a violation.
UNDOCUMENTED = {("GET", "/repos/{owner}/{repo}/tarball"): tarball}
