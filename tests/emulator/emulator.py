"""GitHubEmulator: an aiohttp stand-in for api.github.com, backed by real git repositories.

It serves exactly the calls the App makes (see rest.py and graphql_api.py), checks every REST call
against GitHub's OpenAPI description and every GraphQL document against GitHub's schema when those are
given, and records every call so tests can assert on traffic as well as on resulting git history.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from . import rest
from .auth import AuthError, Installation, InstallationToken, TokenStore, bearer
from .gitstore import GitRepo, Identity
from .graphql_api import Context, run_graphql
from .graphql_schema import load_schema
from .openapi import Operation, load_spec
from .state import ROLES, RepoState, user_json

EXTERNAL = Identity("Octo Pusher", "octo-pusher@example.com")
GITHUB_COMMITTER = Identity("GitHub", "noreply@github.com")  # what GitHub records for API commits
# aiohttp >= 3.12 wants typed request keys; older versions take a plain string.
_GRAPHQL_OP: Any = web.RequestKey("graphql_operation", str) if hasattr(web, "RequestKey") else "graphql_operation"
_TARBALL_NO_REF = re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/tarball/?$")


@dataclass(frozen=True)
class RecordedCall:
    """One request the emulator answered.

    `graphql_operation` (POST /graphql only): operation type, name if any, root fields, e.g.
    "mutation createCommitOnBranch" or "query Head repository".
    """

    method: str
    path: str
    query: dict[str, str]
    json: Any | None
    status: int
    graphql_operation: str | None


class GitHubEmulator:
    """The emulated GitHub; set repositories up, start it, point the App at `base_url`."""

    def __init__(self, *, app_id: str, app_public_key_pem: bytes, root: Path,
                 openapi_path: Path | None = None, graphql_schema_path: Path | None = None,
                 bot_login: str = "retrain[bot]") -> None:
        self.app_id = str(app_id)
        self.app_public_key_pem = app_public_key_pem
        self.root = Path(root)
        self.spec = load_spec(Path(openapi_path) if openapi_path else None)
        self.schema = load_schema(Path(graphql_schema_path) if graphql_schema_path else None)
        self.bot_login = bot_login
        self.bot_id = 41_898_282 + int(self.app_id) if self.app_id.isdigit() else 41_898_282
        self.tokens = TokenStore()
        self.installations: dict[int, Installation] = {}
        self.repos: dict[str, RepoState] = {}
        self.codeload: dict[str, tuple[str, str, float]] = {}
        self.calls: list[RecordedCall] = []
        self.violations: list[str] = []
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    # --- setting up state ------------------------------------------------------------------------------
    def add_repository(self, full_name: str, files: dict[str, bytes], *, default_branch: str = "main",
                       installation_id: int = 1) -> Path:
        """Create a bare repository with one initial commit holding `files`; return its git dir."""
        owner, _, name = full_name.partition("/")
        if not owner or not name or "/" in name or full_name in self.repos:
            raise ValueError(f"bad or duplicate repository name {full_name!r}")
        git_dir = self.root / "repos" / owner / f"{name}.git"
        git = GitRepo.init(git_dir, default_branch)
        git.commit(default_branch, dict(files), "Initial commit", author=EXTERNAL, committer=EXTERNAL,
                   expected_head=None)
        self.repos[full_name] = RepoState(full_name, git, installation_id, default_branch)
        inst = self.installations.setdefault(installation_id, Installation(installation_id, owner))
        inst.repositories.add(full_name)
        return git_dir

    def set_permission(self, full_name: str, login: str, role: str) -> None:
        """Give `login` a role on the repository; logins never given one read as "none"."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        self.repos[full_name].roles[login] = role

    def set_installation_permissions(self, installation_id: int, permissions: dict[str, str]) -> None:
        """Replace what an installation was granted (tokens minted later are limited by it)."""
        self.installations[installation_id].permissions = dict(permissions)

    def expire_tokens(self) -> None:
        """Expire every installation token minted so far (to test the App's token refresh)."""
        self.tokens.expire_all()

    def commit_files(self, full_name: str, files: dict[str, bytes | None], *, message: str = "external change",
                     branch: str | None = None) -> str:
        """A commit pushed by someone else (None deletes a path); returns the new head.

        A branch that does not exist yet is created from the default branch's head.
        """
        repo = self.repos[full_name]
        branch = branch or repo.default_branch
        return repo.git.commit(branch, files, message, author=EXTERNAL, committer=EXTERNAL,
                               expected_head=repo.git.branch_head(branch),
                               base=repo.git.branch_head(repo.default_branch))

    # --- inspecting state ------------------------------------------------------------------------------
    def head(self, full_name: str, branch: str | None = None) -> str:
        repo = self.repos[full_name]
        oid = repo.git.branch_head(branch or repo.default_branch)
        if oid is None:
            raise KeyError(f"{full_name} has no branch {branch}")
        return oid

    def read_file(self, full_name: str, path: str, ref: str | None = None) -> bytes | None:
        repo = self.repos[full_name]
        commit = repo.git.resolve(ref or repo.default_branch)
        return repo.git.read_file(commit, path) if commit else None

    def git_log(self, full_name: str, branch: str | None = None) -> list[dict[str, Any]]:
        """Newest first: {oid, message, author_name, committed_date, parents}."""
        repo = self.repos[full_name]
        return repo.git.log(branch or repo.default_branch)

    def comments(self, full_name: str, issue_number: int) -> list[dict[str, Any]]:
        return list(self.repos[full_name].comments.get(issue_number, []))

    def reactions(self, full_name: str, comment_id: int) -> list[str]:
        return [r["content"] for r in self.repos[full_name].reactions.get(comment_id, [])]

    # --- helpers for the handlers ----------------------------------------------------------------------
    def find_repo(self, token: InstallationToken, full_name: str) -> RepoState | None:
        """The repository if this token may see it (GitHub answers 404 otherwise, never 403)."""
        repo = self.repos.get(full_name)
        if repo is None or repo.installation_id != token.installation_id:
            return None
        allowed = token.repositories
        if allowed is None:  # an unnarrowed token follows the installation's current repositories
            allowed = frozenset(self.installations[token.installation_id].repositories)
        return repo if full_name in allowed else None

    def bot_user(self) -> dict[str, Any]:
        return user_json(self.base_url, self.bot_login, user_type="Bot", user_id=self.bot_id)

    def app_author(self) -> Identity:
        return Identity(self.bot_login, f"{self.bot_id}+{self.bot_login}@users.noreply.github.com")

    # --- HTTP ------------------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/graphql", self._graphql)
        app.router.add_get("/_codeload/{owner}/{repo}/legacy.tar.gz/{sha}", self._codeload)
        app.router.add_route("*", "/{tail:.*}", self._rest)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on the running loop; returns the base URL (the emulator's https://api.github.com)."""
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        bound_host = f"[{bound_host}]" if ":" in bound_host else bound_host  # IPv6 literal
        self.base_url = f"http://{bound_host}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @contextlib.contextmanager
    def running_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        """Serve from a daemon thread with its own loop, for sync fixtures; yields the base URL."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="github-emulator", daemon=True)
        thread.start()
        try:
            yield asyncio.run_coroutine_threadsafe(self.start(host, port), loop).result(timeout=30)
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response = await handler(request)
        except rest.GitHubError as exc:
            response = web.json_response(exc.body, status=exc.status)
        except web.HTTPException:
            raise
        except Exception as exc:  # an emulator bug: make it loud in the e2e assertions, answer like GitHub
            self.violations.append(f"emulator error on {request.method} {request.path}: {exc!r}")
            response = web.json_response({"message": "Server Error"}, status=500)
        raw = await request.read()
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = None
        self.calls.append(RecordedCall(request.method, request.path, dict(request.query), body,
                                       response.status, request.get(_GRAPHQL_OP)))
        return response

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        where = f"{request.method} {request.path}"
        op = self.spec.match(request.method, request.path)
        if op is None:
            m = _TARBALL_NO_REF.match(request.path)
            if request.method == "GET" and m:
                self.violations.append(f"{where}: undocumented in GitHub's OpenAPI description; pass a ref")
                return await rest.tarball(request, self, Operation("/repos/{owner}/{repo}/tarball", "GET",
                                                                   m.groupdict(), {}))
            self.violations.append(f"{where}: no such operation in {self.spec.source}")
            raise rest.not_found()
        handler = rest.HANDLERS.get((op.method, op.template))
        if handler is None:
            self.violations.append(f"{where}: {op.method} {op.template} is documented but not emulated")
            raise rest.not_found()
        return await handler(request, self, op)

    async def _codeload(self, request: web.Request) -> web.StreamResponse:
        return await rest.codeload(request, self)

    async def _graphql(self, request: web.Request) -> web.StreamResponse:
        credential = bearer(request.headers.get("Authorization"))
        if credential is None:
            raise rest.GitHubError(401, "This endpoint requires you to be authenticated.")
        try:
            token = self.tokens.lookup(credential)
        except AuthError as exc:
            raise rest.GitHubError(401, exc.message) from exc
        try:
            body = json.loads(await request.read())
        except ValueError as exc:
            raise rest.GitHubError(400, "Problems parsing JSON") from exc
        ctx = Context(token, self.find_repo, self.app_author(), GITHUB_COMMITTER)
        out, label, problems = await asyncio.to_thread(run_graphql, self.schema, body, ctx)
        request[_GRAPHQL_OP] = label
        self.violations.extend(problems)
        return web.json_response(out)
