"""The aiohttp application of the emulator: routing, recording, injected faults and rate-limit headers."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import apps, checks, gitdata, hooks, listing, pulls, releases, rest, uploads, versions
from .auth import AuthError, bearer
from .faults import (
    DROP_CONNECTION,
    Fault,
    default_body,
    fault_headers,
    graphql_rate_limited_body,
    primary_limit_body,
    request_id,
)
from .graphql_api import Context, run_graphql
from .openapi import Operation
from .state import GITHUB_COMMITTER

if TYPE_CHECKING:
    from .emulator import GitHubEmulator

# aiohttp >= 3.12 wants typed request keys; older versions take a plain string.
_GRAPHQL_OP: Any = web.RequestKey("graphql_operation", str) if hasattr(web, "RequestKey") else "graphql_operation"
_TARBALL_NO_REF = re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/tarball/?$")
HANDLERS: dict[tuple[str, str], rest.Handler] = {**rest.HANDLERS, **checks.HANDLERS, **gitdata.HANDLERS,
                                                 **hooks.HANDLERS, **apps.HANDLERS, **listing.HANDLERS,
                                                 **releases.HANDLERS, **pulls.HANDLERS}


@dataclass(frozen=True)
class RecordedCall:
    """One request the emulator answered.

    `graphql_operation` (POST /graphql only): operation type, name if any, root fields, e.g.
    "mutation createCommitOnBranch" or "query Head repository". `fault`: answered by an injected fault
    (the request was not handled and changed nothing). `api_version`: the X-GitHub-Api-Version header the
    request carried, None without one.
    """

    method: str
    path: str
    query: dict[str, str]
    json: Any | None
    status: int
    graphql_operation: str | None
    fault: bool = False
    api_version: str | None = None
    host: str = "api.github.com"  # or "codeload.github.com" (make_codeload_app), "uploads.github.com"


def _rate_key(emu: GitHubEmulator, request: web.Request) -> tuple[str, str, str] | None:
    """(kind, who, resource) GitHub counts this request against; None for github.com's web pages."""
    if request.path.endswith("/settings/apps/new"):
        return None
    resource = "graphql" if request.path == "/graphql" else "core"
    credential = bearer(request.headers.get("Authorization"))
    if credential:
        try:
            return "installation", str(emu.tokens.lookup(credential).installation_id), resource
        except AuthError:
            if credential.count(".") == 2:
                try:
                    return "app", emu.authenticate_app(credential).id, resource
                except AuthError:
                    return "app", emu.app_id, resource
    return "client", request.remote or "unknown", resource


def _who(key: tuple[str, str, str] | None) -> str:
    if key is None or key[0] == "client":
        return key[1] if key else "unknown"
    return f"{key[0]} ID {key[1]}"


def _fault_response(fault: Fault, key: tuple[str, str, str] | None, rid: str) -> web.StreamResponse:
    if fault.status == DROP_CONNECTION:
        return web.Response(status=502)  # never sent: the connection is aborted
    headers = fault_headers(fault.status, fault.headers, key[2] if key else "core")
    body = fault.body if fault.body is not None else default_body(fault.status, headers, who=_who(key), rid=rid)
    if callable(body):
        body = body(_who(key), rid)
    if isinstance(body, str | bytes):
        return web.Response(body=body, status=fault.status, headers=headers, content_type="text/html")
    return web.json_response(body, status=fault.status, headers=headers)


async def _handle(emu: GitHubEmulator, request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except rest.GitHubError as exc:
        return web.json_response(exc.body, status=exc.status)
    except web.HTTPException:
        raise
    except Exception as exc:  # an emulator bug: make it loud in the e2e assertions, answer like GitHub
        emu.violations.append(f"emulator error on {request.method} {request.path}: {exc!r}")
        return web.json_response({"message": "Server Error"}, status=500)


def _check_version_sent(emu: GitHubEmulator, request: web.Request) -> None:
    """In strict mode (emu.require_api_version) a REST call without the header is a violation: GitHub
    would serve it with its default version, but the App pins the version it was written against."""
    if emu.require_api_version and versions.versioned(request.path) and versions.requested(
            request.headers) is None:
        emu.violations.append(f"{request.method} {request.path}: no {versions.HEADER} header")


def _recording(emu: GitHubEmulator, *, host: str, reads_body: bool) -> Any:
    """The middleware of a host that answers REST calls: version check, injected faults, rate limits,
    recording. `reads_body`: False on the upload host, whose bodies (files up to 2 GiB) are streamed by
    the handler, never read whole here; its faults match on method and path alone."""

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        rid, key = request_id(), _rate_key(emu, request)
        _check_version_sent(emu, request)
        fault = emu.faults.take(request.method, request.path, await request.read() if reads_body else b"")
        if fault is not None and fault.after:  # carried out, and then the answer is lost
            await _handle(emu, request, handler)
            response = _fault_response(fault, key, rid)
            if fault.status == DROP_CONNECTION and request.transport is not None:
                request.transport.abort()  # no answer at all: the client sees the connection go
        elif fault is not None:
            response = _fault_response(fault, key, rid)
            if fault.status == DROP_CONNECTION and request.transport is not None:
                request.transport.abort()
        else:
            limit_headers, exceeded = emu.rate_limits.charge(*key) if key else ({}, False)
            if exceeded and key is not None and key[2] == "graphql":  # GraphQL says so in a 200
                response = web.json_response(graphql_rate_limited_body(_who(key)))
            elif exceeded:
                response = web.json_response(primary_limit_body(_who(key), rid), status=403)
            else:
                response = await _handle(emu, request, handler)
            response.headers.update(limit_headers)
        response.headers["x-github-request-id"] = rid
        asked = versions.requested(request.headers)
        if versions.versioned(request.path) and (served := versions.selected(asked)):
            response.headers[versions.SELECTED_HEADER] = served
        body = None
        if reads_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                body = None
        status = DROP_CONNECTION if fault is not None and fault.status == DROP_CONNECTION else response.status
        emu.calls.append(RecordedCall(request.method, request.path, dict(request.query), body, status,
                                      request.get(_GRAPHQL_OP), fault is not None, asked, host=host))
        return response

    return record


def make_app(emu: GitHubEmulator) -> web.Application:
    """The emulator's aiohttp application."""

    async def rest_call(request: web.Request) -> web.StreamResponse:
        asked = versions.requested(request.headers)
        if versions.selected(asked) is None:
            raise rest.GitHubError(400, "Bad Request", errors=versions.unsupported_message(asked or ""))
        where = f"{request.method} {request.path}"
        op = emu.spec.match(request.method, request.path)
        if op is None:
            m = _TARBALL_NO_REF.match(request.path)
            if request.method == "GET" and m:
                emu.violations.append(f"{where}: undocumented in GitHub's OpenAPI description; pass a ref")
                return await rest.tarball(request, emu, Operation("/repos/{owner}/{repo}/tarball", "GET",
                                                                  m.groupdict(), {}))
            emu.violations.append(f"{where}: no such operation in {emu.spec.source}")
            raise rest.not_found()
        handler = HANDLERS.get((op.method, op.template))
        if handler is None:
            emu.violations.append(f"{where}: {op.method} {op.template} is documented but not emulated")
            raise rest.not_found()
        return await handler(request, emu, op)

    async def new_app(request: web.Request) -> web.StreamResponse:
        return await apps.new_app_page(request, emu)

    async def graphql(request: web.Request) -> web.StreamResponse:
        credential = bearer(request.headers.get("Authorization"))
        if credential is None:
            raise rest.GitHubError(401, "This endpoint requires you to be authenticated.")
        try:
            token = emu.tokens.lookup(credential)
        except AuthError as exc:
            raise rest.GitHubError(401, exc.message) from exc
        try:
            body = json.loads(await request.read())
        except ValueError as exc:
            raise rest.GitHubError(400, "Problems parsing JSON") from exc
        ctx = Context(token, emu.find_repo, emu.app_author(), GITHUB_COMMITTER)
        out, label, problems = await asyncio.to_thread(run_graphql, emu.schema, body, ctx)
        request[_GRAPHQL_OP] = label
        emu.violations.extend(problems)
        return web.json_response(out)

    app = web.Application(middlewares=[_recording(emu, host="api.github.com", reads_body=True)],
                          client_max_size=64 * 1024 * 1024)
    app.router.add_post("/graphql", graphql)
    # github.com's pages for registering an App from a manifest (the emulator's base URL is also its web URL)
    app.router.add_post("/settings/apps/new", new_app)
    app.router.add_post("/organizations/{org}/settings/apps/new", new_app)
    app.router.add_route("*", "/{tail:.*}", rest_call)
    return app


def make_codeload_app(emu: GitHubEmulator) -> web.Application:
    """codeload.github.com, where a tarball request redirects: served on a port of its own, so it is another
    origin and an HTTP client following the redirect drops the Authorization header, as it must."""

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        response = await handler(request)
        emu.calls.append(RecordedCall(request.method, request.path, dict(request.query), None, response.status,
                                      None, host="codeload.github.com"))
        return response

    async def archive(request: web.Request) -> web.StreamResponse:
        return await rest.codeload(request, emu)

    app = web.Application(middlewares=[record])
    app.router.add_get("/{owner}/{repo}/legacy.tar.gz/{sha}", archive)
    return app


def make_uploads_app(emu: GitHubEmulator) -> web.Application:
    """uploads.github.com, where release assets go (uploads.py): a port of its own, so a client must take
    the host from a release's `upload_url` (or its settings), and faults can be injected there too."""

    async def upload(request: web.Request) -> web.StreamResponse:
        return await uploads.upload_asset(request, emu)

    app = web.Application(middlewares=[_recording(emu, host="uploads.github.com", reads_body=False)])
    app.router.add_route("*", "/{tail:.*}", upload)
    return app
