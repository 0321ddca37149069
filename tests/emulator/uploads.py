"""The upload host (uploads.github.com): `POST /repos/{owner}/{repo}/releases/{release_id}/assets?name=N`
with the file's raw bytes as the body, on a port of its own (as codeload is), named in a release's
`upload_url`.

What GitHub does, and the emulator with it ("Upload a release asset", "About releases"):
- the same credentials and permission as creating a release (contents: write); a release that does not
  exist, or a draft the token may not see, is 404;
- `name` is a required query parameter; `Content-Type` and `Content-Length` are required ("Use the
  required Content-Type header"; "Most libraries will set the required Content-Length header");
- "each file included in a release must be under 2 GiB" (`emu.max_asset_bytes`, the largest size
  accepted, lowered by tests), and a release holds at most 1,000 assets (`emu.max_release_assets`);
- a name already used on the release is 422 with errors [{resource: ReleaseAsset, code: already_exists,
  field: name}] ("you'll receive an error and must delete the old file");
- an upload cut short leaves an asset whose `state` is not "uploaded" (GitHub: "may leave an empty asset
  with a state of starter. It can be safely deleted"); it keeps its name until deleted;
- GitHub renames names with special characters or leading and trailing periods; the emulator does not,
  and records a violation instead, so a client that would find its asset under another name is caught.
The statuses and wordings for a missing name or header and an oversized file are the emulator's own
(GitHub's were not found quoted), in GitHub's shape. The bytes are streamed to disk under the emulator's
root with their sha256 (the asset's `digest`); `emu.asset_bytes` reads them back.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import versions
from .openapi import Operation
from .releases import IMMUTABLE, find_release
from .rest import GitHubError, fail, installation_token, not_found, visible_repo
from .state import HTML, RepoState, next_id, node_id, now_iso

if TYPE_CHECKING:
    from .emulator import GitHubEmulator

UPLOAD_TEMPLATE = "/repos/{owner}/{repo}/releases/{release_id}/assets"
RENAMED = re.compile(r"[^A-Za-z0-9._+-]|^\.|\.$")  # names GitHub would store under another name
CHUNK = 256 * 1024


def _asset_error(op: Operation, field: str, code: str, message: str | None = None) -> GitHubError:
    error = {"resource": "ReleaseAsset", "code": code, "field": field, **({"message": message} if message else {})}
    return fail(op, 422, "Validation Failed", errors=[error])


def _required_query(emu: GitHubEmulator, op: Operation) -> list[str]:
    params = [emu.spec._deref(p) for p in op.spec.get("parameters", [])]
    return [p["name"] for p in params if p.get("in") == "query" and p.get("required")]


def _checked(request: web.Request, emu: GitHubEmulator, op: Operation, repo: RepoState,
             release: dict[str, Any]) -> tuple[str, int]:
    """(name, size) of an upload GitHub would take; its refusal otherwise, before any byte is read."""
    missing = [n for n in _required_query(emu, op) if not request.query.get(n)]
    if missing:
        raise fail(op, 422, f"Invalid request.\n\n\"{missing[0]}\" wasn't supplied.")
    name = request.query["name"]
    if RENAMED.search(name):
        emu.violations.append(f"POST {request.path}: GitHub would rename the asset {name!r}")
    if "Content-Type" not in request.headers:
        raise fail(op, 400, "Content-Type header is required")
    raw_length = request.headers.get("Content-Length")
    if raw_length is None or not raw_length.isdigit():
        raise fail(op, 411, "Content-Length header is required")
    size = int(raw_length)
    if size > emu.max_asset_bytes:
        raise _asset_error(op, "size", "custom", f"size must be less than {emu.max_asset_bytes + 1} bytes")
    if repo.immutable_releases and not release["draft"]:
        raise fail(op, 422, IMMUTABLE)
    ours = [a for aid, a in repo.assets.items() if repo.asset_release[aid] == release["id"]]
    if any(a["name"] == name for a in ours):
        raise _asset_error(op, "name", "already_exists")
    if len(ours) >= emu.max_release_assets:
        raise fail(op, 422, f"A release may have at most {emu.max_release_assets} assets")
    return name, size


def new_asset(emu: GitHubEmulator, repo: RepoState, release: dict[str, Any], name: str, *, size: int,
              content_type: str, label: str | None = None) -> dict[str, Any]:
    """A `release-asset` object, added to the release in state "open" (its bytes not all there yet)."""
    asset_id, stamp = next_id(), now_iso()
    asset: dict[str, Any] = {
        "id": asset_id, "node_id": node_id("RA", str(asset_id)), "name": name, "label": label or None,
        "state": "open", "content_type": content_type, "size": size, "digest": None, "download_count": 0,
        "created_at": stamp, "updated_at": stamp, "uploader": emu.bot_user(),
        "url": f"{emu.base_url}/repos/{repo.full_name}/releases/assets/{asset_id}",
        "browser_download_url": f"{HTML}/{repo.full_name}/releases/download/{release['tag_name']}/{name}"}
    repo.assets[asset_id] = asset  # visible (not yet "uploaded") while the bytes arrive, as on GitHub
    repo.asset_release[asset_id] = release["id"]
    return asset


async def upload_asset(request: web.Request, emu: GitHubEmulator) -> web.StreamResponse:
    asked = versions.requested(request.headers)
    if versions.selected(asked) is None:
        raise GitHubError(400, "Bad Request", errors=versions.unsupported_message(asked or ""))
    op = emu.spec.match(request.method, request.path)
    if op is None or op.template != UPLOAD_TEMPLATE or op.method != "POST":
        emu.violations.append(f"{request.method} {request.path} on uploads.github.com: only asset uploads are "
                              "served there")
        raise not_found()
    token = installation_token(request, emu)
    repo = visible_repo(emu, token, op, ("contents",), "write")
    release = find_release(repo, op, token)
    name, size = _checked(request, emu, op, repo, release)
    asset = new_asset(emu, repo, release, name, size=size, content_type=request.headers["Content-Type"],
                      label=request.query.get("label"))
    asset_id = asset["id"]
    digest, received = hashlib.sha256(), 0
    path = emu.asset_path(asset_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        try:
            async for chunk in request.content.iter_chunked(CHUNK):
                received += len(chunk)
                digest.update(chunk)
                out.write(chunk)
        except ConnectionError:  # the client went away: what arrived stays, as an asset not uploaded
            return web.Response(status=400)
    if received != size:  # the connection ended early: the asset stays behind, not uploaded
        raise fail(op, 400, f"Expected {size} bytes, received {received}")
    asset.update(state="uploaded", digest=f"sha256:{digest.hexdigest()}", updated_at=now_iso())
    return web.json_response(asset, status=201)
