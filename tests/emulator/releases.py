"""Releases on the API host: create, list, get (by id or tag), update (publish a draft), and their assets
(list, get, delete). Uploading an asset is on the upload host (uploads.py).

What GitHub does, and the emulator with it (GitHub's REST docs "Releases" and "Release assets"; public
answers quoted where named):
- Creating, updating and deleting need contents: write; reading needs contents: read. Drafts are seen
  only by those with push access ("Information about published releases are available to everyone. Only
  users with push access will receive listings for draft releases"); `releases/tags/{tag}` finds
  published releases only ("Get a published release with the specified tag").
- `tag_name` must be a valid git tag name; one that a published release already uses is 422 with errors
  [{resource: Release, code: already_exists, field: tag_name}] (conventional-changelog/releaser-tools#50).
  Drafts may share a tag (several drafts of one tag pile up, GitTools/GitReleaseManager#159), and
  publishing one is refused the same way when its tag is taken by then.
- The tag is made at `target_commitish` (a branch or a commit sha; default branch by default) when the
  release is published and no such tag exists ("Unused if the Git tag already exists"); a target that
  names no commit is 422 with errors [{resource: Release, code: invalid, field: target_commitish}].
- A release's `body` is at most 125,000 characters: 422 errors [{resource: Release, code: custom,
  field: body, message: "body is too long (maximum is 125000 characters)"}].
- With the repository's immutable releases on, a published release's assets are fixed: uploading or
  deleting one is 422 "Cannot upload assets to an immutable release" (openedx/sample-plugin#57).
Wordings not quoted from a public answer are the emulator's own, in GitHub's shape.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .listing import _page
from .openapi import Operation
from .rest import Handler, fail, installation_token, not_found, read_json, visible_repo
from .state import HTML, RepoState, next_id, node_id, now_iso

if TYPE_CHECKING:
    from .auth import InstallationToken
    from .emulator import GitHubEmulator

MAX_BODY_CHARS = 125_000
IMMUTABLE = "Cannot upload assets to an immutable release"


def release_json(emu: GitHubEmulator, repo: RepoState, release: dict[str, Any]) -> dict[str, Any]:
    """A `release` object: the stored fields plus its assets, oldest first."""
    assets = [copy.deepcopy(a) for aid, a in repo.assets.items() if repo.asset_release[aid] == release["id"]]
    immutable = repo.immutable_releases and not release["draft"]
    return {**copy.deepcopy(release), "assets": assets, "immutable": immutable}


def _validation(op: Operation, field: str, code: str, message: str | None = None) -> Exception:
    error = {"resource": "Release", "code": code, "field": field, **({"message": message} if message else {})}
    return fail(op, 422, "Validation Failed", errors=[error])


def _valid_tag(repo: RepoState, tag: str) -> bool:
    return bool(tag) and repo.git.git("check-ref-format", f"refs/tags/{tag}", check=False).returncode == 0


def _published_with(repo: RepoState, tag: str, other_than: int | None = None) -> dict[str, Any] | None:
    return next((r for r in repo.releases.values()
                 if r["tag_name"] == tag and not r["draft"] and r["id"] != other_than), None)


def _check_body(op: Operation, body: dict[str, Any]) -> None:
    text = body.get("body")
    if isinstance(text, str) and len(text) > MAX_BODY_CHARS:
        raise _validation(op, "body", "custom", f"body is too long (maximum is {MAX_BODY_CHARS} characters)")


async def _make_tag(op: Operation, repo: RepoState, release: dict[str, Any]) -> None:
    """Publishing makes the tag at the target, unless the tag exists already (then the target is unused)."""
    tag = f"refs/tags/{release['tag_name']}"
    if await asyncio.to_thread(repo.git.ref_target, tag) is not None:
        return
    commit = await asyncio.to_thread(repo.git.resolve, release["target_commitish"])
    if commit is None:
        raise _validation(op, "target_commitish", "invalid")
    await asyncio.to_thread(repo.git.update_ref, tag, commit, "0" * 40)


def _urls(emu: GitHubEmulator, repo: RepoState, release_id: int, tag: str, draft: bool) -> dict[str, str]:
    api = f"{emu.base_url}/repos/{repo.full_name}"
    shown = f"untagged-{secrets.token_hex(10)}" if draft else tag
    return {"url": f"{api}/releases/{release_id}", "assets_url": f"{api}/releases/{release_id}/assets",
            "upload_url": f"{emu.uploads_url}/repos/{repo.full_name}/releases/{release_id}/assets{{?name,label}}",
            "html_url": f"{HTML}/{repo.full_name}/releases/tag/{shown}"}


async def create_release(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    repo = visible_repo(emu, installation_token(request, emu), op, ("contents",), "write")
    body = await read_json(request, emu, op)
    tag, draft = body["tag_name"], bool(body.get("draft", False))
    if not _valid_tag(repo, tag):
        raise _validation(op, "tag_name", "invalid")
    if _published_with(repo, tag) is not None:
        raise _validation(op, "tag_name", "already_exists")
    _check_body(op, body)
    target = body.get("target_commitish") or repo.default_branch
    exists = await asyncio.to_thread(repo.git.ref_target, f"refs/tags/{tag}")
    if exists is None and await asyncio.to_thread(repo.git.resolve, target) is None:
        raise _validation(op, "target_commitish", "invalid")
    release_id, stamp = next_id(), now_iso()
    api = f"{emu.base_url}/repos/{repo.full_name}"
    release: dict[str, Any] = {
        "id": release_id, "node_id": node_id("RE", str(release_id)), "tag_name": tag, "target_commitish": target,
        "name": body.get("name") or None, "body": body.get("body"), "draft": draft,
        "prerelease": bool(body.get("prerelease", False)), "created_at": stamp, "updated_at": stamp,
        "published_at": None if draft else stamp, "author": emu.bot_user(),
        "tarball_url": None if draft else f"{api}/tarball/{tag}",
        "zipball_url": None if draft else f"{api}/zipball/{tag}",
        **_urls(emu, repo, release_id, tag, draft)}
    if not draft:
        await _make_tag(op, repo, release)
    repo.releases[release_id] = release
    return web.json_response(release_json(emu, repo, release), status=201, headers={"Location": release["url"]})


def sees_drafts(token: InstallationToken) -> bool:
    return token.allows("contents", "write")


def find_release(repo: RepoState, op: Operation, token: InstallationToken) -> dict[str, Any]:
    """The release in the path (404 when there is none, or it is a draft this token may not see)."""
    raw = op.params["release_id"]
    release = repo.releases.get(int(raw)) if raw.isdigit() else None
    if release is None or (release["draft"] and not sees_drafts(token)):
        raise not_found()
    return release


async def list_releases(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    token = installation_token(request, emu)
    repo = visible_repo(emu, token, op, ("contents",), "read")
    shown = [release_json(emu, repo, r) for r in sorted(repo.releases.values(), key=lambda r: -r["id"])
             if not r["draft"] or sees_drafts(token)]
    page, headers = _page(request, shown)
    return web.json_response(page, headers=headers)


async def release_by_tag(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    repo = visible_repo(emu, installation_token(request, emu), op, ("contents",), "read")
    release = _published_with(repo, op.params["tag"])
    if release is None:
        raise not_found()
    return web.json_response(release_json(emu, repo, release))


async def get_release(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    token = installation_token(request, emu)
    repo = visible_repo(emu, token, op, ("contents",), "read")
    return web.json_response(release_json(emu, repo, find_release(repo, op, token)))


async def update_release(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    token = installation_token(request, emu)
    repo = visible_repo(emu, token, op, ("contents",), "write")
    release = find_release(repo, op, token)
    body = await read_json(request, emu, op) or {}
    _check_body(op, body)
    updated = copy.deepcopy(release)
    for key in ("tag_name", "target_commitish", "name", "body", "prerelease"):
        if key in body:
            updated[key] = body[key]
    if not _valid_tag(repo, updated["tag_name"]):
        raise _validation(op, "tag_name", "invalid")
    if body.get("draft") is True and not release["draft"] and repo.immutable_releases:
        raise fail(op, 422, "Cannot unpublish an immutable release")
    if "draft" in body:
        updated["draft"] = bool(body["draft"])
    if not updated["draft"]:
        if _published_with(repo, updated["tag_name"], other_than=release["id"]) is not None:
            raise _validation(op, "tag_name", "already_exists")
        await _make_tag(op, repo, updated)
        if release["draft"]:
            api = f"{emu.base_url}/repos/{repo.full_name}"
            tag = updated["tag_name"]
            updated.update(published_at=now_iso(), tarball_url=f"{api}/tarball/{tag}",
                           zipball_url=f"{api}/zipball/{tag}", **_urls(emu, repo, release["id"], tag, False))
    updated["updated_at"] = now_iso()
    release.clear()
    release.update(updated)
    return web.json_response(release_json(emu, repo, release))


async def list_assets(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    token = installation_token(request, emu)
    repo = visible_repo(emu, token, op, ("contents",), "read")
    page, headers = _page(request, release_json(emu, repo, find_release(repo, op, token))["assets"])
    return web.json_response(page, headers=headers)


def find_asset(repo: RepoState, op: Operation) -> dict[str, Any]:
    raw = op.params["asset_id"]
    asset = repo.assets.get(int(raw)) if raw.isdigit() else None
    if asset is None:
        raise not_found()
    return asset


async def get_asset(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    repo = visible_repo(emu, installation_token(request, emu), op, ("contents",), "read")
    if "application/octet-stream" in request.headers.get("Accept", ""):
        emu.violations.append(f"GET {request.path}: downloading an asset's bytes is not emulated "
                              "(GitHub redirects to its storage); tests read them with emu.asset_bytes")
    return web.json_response(copy.deepcopy(find_asset(repo, op)))


async def delete_asset(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    repo = visible_repo(emu, installation_token(request, emu), op, ("contents",), "write")
    asset = find_asset(repo, op)
    release = repo.releases[repo.asset_release[asset["id"]]]
    if repo.immutable_releases and not release["draft"]:
        raise fail(op, 422, IMMUTABLE)
    del repo.assets[asset["id"]], repo.asset_release[asset["id"]]
    emu.asset_path(asset["id"]).unlink(missing_ok=True)
    return web.Response(status=204)


HANDLERS: dict[tuple[str, str], Handler] = {
    ("POST", "/repos/{owner}/{repo}/releases"): create_release,
    ("GET", "/repos/{owner}/{repo}/releases"): list_releases,
    ("GET", "/repos/{owner}/{repo}/releases/tags/{tag}"): release_by_tag,
    ("GET", "/repos/{owner}/{repo}/releases/{release_id}"): get_release,
    ("PATCH", "/repos/{owner}/{repo}/releases/{release_id}"): update_release,
    ("GET", "/repos/{owner}/{repo}/releases/{release_id}/assets"): list_assets,
    ("GET", "/repos/{owner}/{repo}/releases/assets/{asset_id}"): get_asset,
    ("DELETE", "/repos/{owner}/{repo}/releases/assets/{asset_id}"): delete_asset,
}
