"""The emulator's releases (API host) and asset uploads (upload host) refuse what GitHub refuses: bad or
taken tags, targets that are no commit, long bodies, uploads without a name or headers, files over the
limit, names taken, the wrong host, tokens without contents: write, changes to immutable releases; and
their answers are GitHub's documented `release` and `release-asset` shapes."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from tests.emulator.client import API_VERSION, Reply, http
from tests.emulator.harness import INSTALLATION, Env, app_jwt
from tests.emulator.harness import env as env  # the module-scoped emulator fixture

REPO = "octo/demo"
RELEASES = f"/repos/{REPO}/releases"
_tags = itertools.count(1)


def upload(env: Env, release: dict[str, Any], data: bytes = b"abc", *, name: str | None = "a.bin",
           headers: dict[str, str] | None = None, skip: tuple[str, ...] = (), token: str | None = None,
           base: str | None = None) -> Reply:
    """A raw upload to the release's upload host (or `base`), as the client sends one."""
    path = release["upload_url"].split("{", 1)[0].removeprefix(env.emu.uploads_url)
    url = (base or env.emu.uploads_url) + path

    async def go() -> Reply:
        sent = {"Authorization": f"token {token or env.token}", "X-GitHub-Api-Version": API_VERSION,
                "Content-Type": "application/octet-stream", **(headers or {})}
        for key in skip:
            sent.pop(key, None)
        async with aiohttp.ClientSession() as session, session.post(
                url, data=data, headers=sent, params={"name": name} if name else None,
                skip_auto_headers=skip) as r:
            return Reply(r.status, CIMultiDict(r.headers), await r.read())

    return asyncio.run(go())


def new_release(env: Env, **body: Any) -> dict[str, Any]:
    reply = env.call("POST", RELEASES, {"tag_name": f"v0.{next(_tags)}", "target_commitish": "main", **body})
    assert reply.status == 201, reply.body
    return reply.json()


def narrowed_token(env: Env, permissions: dict[str, str]) -> str:
    reply = http("POST", f"{env.base}/app/installations/{INSTALLATION}/access_tokens",
                 auth=f"Bearer {app_jwt()}", body={"permissions": permissions})
    assert reply.status == 201
    return reply.json()["token"]


def errors(reply: Reply) -> list[dict[str, Any]]:
    return reply.json().get("errors") or []


# --- releases ---------------------------------------------------------------------------------------------------
def test_a_release_is_made_at_a_commit_and_shaped_as_github_documents(env: Env) -> None:
    head = env.emu.head(REPO)
    reply = env.call("POST", RELEASES, {"tag_name": "v1.0.0", "target_commitish": head, "name": "one",
                                        "body": "notes"})
    assert reply.status == 201 and reply.headers["Location"].endswith(f"/releases/{reply.json()['id']}")
    env.conforms("POST", RELEASES, reply)
    release = reply.json()
    assert release["upload_url"].startswith(env.emu.uploads_url + f"/repos/{REPO}/releases/")
    assert release["upload_url"].endswith("/assets{?name,label}")
    assert (release["draft"], release["body"], release["assets"]) == (False, "notes", [])
    assert env.emu.repos[REPO].git.ref_target("refs/tags/v1.0.0") == head
    by_tag = env.call("GET", f"{RELEASES}/tags/v1.0.0")
    assert by_tag.status == 200 and by_tag.json()["id"] == release["id"]
    env.conforms("GET", f"{RELEASES}/tags/v1.0.0", by_tag)
    listed = env.call("GET", RELEASES)
    env.conforms("GET", RELEASES, listed)
    assert release["id"] in [r["id"] for r in listed.json()]


@pytest.mark.parametrize(("body", "status", "field", "code"), [
    ({"tag_name": "v..1"}, 422, "tag_name", "invalid"),
    ({"tag_name": "a b"}, 422, "tag_name", "invalid"),
    ({"tag_name": "x.lock"}, 422, "tag_name", "invalid"),
    ({"tag_name": "v9", "target_commitish": "0" * 40}, 422, "target_commitish", "invalid"),
    ({"tag_name": "v9", "target_commitish": "no-such-branch"}, 422, "target_commitish", "invalid"),
    ({"tag_name": "v9", "target_commitish": "0" * 40, "draft": True}, 422, "target_commitish", "invalid"),
    ({"tag_name": "v9", "body": "x" * 125_001}, 422, "body", "custom"),
])
def test_a_release_github_would_refuse_is_refused(env: Env, body: dict[str, Any], status: int, field: str,
                                                  code: str) -> None:
    reply = env.call("POST", RELEASES, body)
    assert reply.status == status
    assert [(e["field"], e["code"]) for e in errors(reply)] == [(field, code)]
    assert not [r for r in env.emu.releases(REPO) if r["tag_name"] == body["tag_name"]]


def test_a_body_off_the_schema_is_refused_and_recorded(env: Env) -> None:
    before = len(env.emu.violations)
    assert env.call("POST", RELEASES, {"tag_name": "v10", "draft": "yes"}).status == 422
    assert env.call("POST", RELEASES, {"name": "no tag"}).status == 422
    assert len(env.take_violations(before)) == 2


def test_a_tag_is_published_once_and_drafts_are_seen_only_with_push_access(env: Env) -> None:
    first = new_release(env)
    again = env.call("POST", RELEASES, {"tag_name": first["tag_name"]})
    assert again.status == 422 and errors(again) == [{"resource": "Release", "code": "already_exists",
                                                      "field": "tag_name"}]
    one = new_release(env, tag_name="v-draft", draft=True)
    two = new_release(env, tag_name="v-draft", draft=True)  # drafts may share a tag, as on GitHub
    assert one["published_at"] is None and not env.emu.repos[REPO].git.ref_target("refs/tags/v-draft")
    assert env.call("GET", f"{RELEASES}/tags/v-draft").status == 404  # published releases only
    reader = f"token {narrowed_token(env, {'contents': 'read', 'metadata': 'read'})}"
    assert one["id"] not in [r["id"] for r in env.call("GET", RELEASES, auth=reader).json()]
    assert env.call("GET", f"{RELEASES}/{one['id']}", auth=reader).status == 404
    assert one["id"] in [r["id"] for r in env.call("GET", f"{RELEASES}?per_page=100").json()]
    published = env.call("PATCH", f"{RELEASES}/{one['id']}", {"draft": False})
    assert published.status == 200 and published.json()["published_at"] and not published.json()["draft"]
    env.conforms("PATCH", f"{RELEASES}/{one['id']}", published)
    assert published.json()["html_url"].endswith("/releases/tag/v-draft")
    assert env.emu.repos[REPO].git.ref_target("refs/tags/v-draft") == env.emu.head(REPO)
    clash = env.call("PATCH", f"{RELEASES}/{two['id']}", {"draft": False})
    assert clash.status == 422 and errors(clash)[0]["code"] == "already_exists"
    assert env.call("PATCH", f"{RELEASES}/{one['id']}", {"draft": False}).status == 200  # again: harmless


def test_release_calls_need_contents_permission(env: Env) -> None:
    reader = f"token {narrowed_token(env, {'contents': 'read', 'metadata': 'read'})}"
    assert env.call("POST", RELEASES, {"tag_name": "v-nope"}, auth=reader).status == 403
    nothing = f"token {narrowed_token(env, {'metadata': 'read'})}"
    assert env.call("GET", RELEASES, auth=nothing).status == 403
    assert env.call("GET", "/repos/elsewhere/private/releases").status == 404


# --- assets -----------------------------------------------------------------------------------------------------
def test_an_upload_keeps_its_bytes_and_is_shaped_as_github_documents(env: Env) -> None:
    release = new_release(env, draft=True)
    data = bytes(range(256)) * 4096  # 1 MiB
    reply = upload(env, release, data, name="model.safetensors", headers={"Content-Type": "application/x-st"})
    assert reply.status == 201, reply.body
    asset = reply.json()
    assert (asset["name"], asset["size"], asset["state"]) == ("model.safetensors", len(data), "uploaded")
    assert asset["digest"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert asset["content_type"] == "application/x-st"
    if env.emu.spec.source != "embedded":
        op = env.emu.spec.match("POST", f"{RELEASES}/{release['id']}/assets")
        assert op is not None and env.emu.spec.response_errors(op, 201, asset) == []
    assert env.emu.asset_bytes(REPO, release["tag_name"], "model.safetensors") == data
    listed = env.call("GET", f"{RELEASES}/{release['id']}/assets")
    assert [a["id"] for a in listed.json()] == [asset["id"]]
    env.conforms("GET", f"{RELEASES}/{release['id']}/assets", listed)
    got = env.call("GET", f"{RELEASES}/assets/{asset['id']}")
    env.conforms("GET", f"{RELEASES}/assets/{asset['id']}", got)
    assert [c.host for c in env.emu.calls if c.query.get("name") == "model.safetensors"] == ["uploads.github.com"]


def test_an_upload_github_would_refuse_is_refused_before_its_bytes_are_kept(env: Env) -> None:
    release = new_release(env, draft=True)
    before = len(env.emu.violations)
    assert upload(env, release, name=None).status == 422  # `name` is required
    assert upload(env, release, skip=("Content-Type",)).status == 400

    async def chunked() -> AsyncIterator[bytes]:
        yield b"abc"

    assert upload(env, release, chunked()).status == 411  # no Content-Length
    env.emu.max_asset_bytes = 1000
    try:
        big = upload(env, release, b"x" * 1001, name="big.bin")
        assert big.status == 422 and errors(big)[0]["field"] == "size"
        assert upload(env, release, b"x" * 1000, name="fits.bin").status == 201
    finally:
        env.emu.max_asset_bytes = 2 * 1024**3 - 1
    assert upload(env, release, name="a.bin").status == 201
    taken = upload(env, release, name="a.bin")
    assert taken.status == 422 and errors(taken) == [{"resource": "ReleaseAsset", "code": "already_exists",
                                                      "field": "name"}]
    names = [a["name"] for r in env.emu.releases(REPO) if r["id"] == release["id"] for a in r["assets"]]
    assert sorted(names) == ["a.bin", "fits.bin"]
    assert env.take_violations(before) == []


def test_uploads_need_the_upload_host_a_known_release_and_contents_write(env: Env) -> None:
    release = new_release(env, draft=True)
    missing = {**release, "upload_url": release["upload_url"].replace(f"/{release['id']}/", "/999999999/")}
    assert upload(env, missing).status == 404
    reader = narrowed_token(env, {"contents": "read", "metadata": "read"})
    assert upload(env, release, token=reader).status in (403, 404)  # a draft is not even seen without push
    published = new_release(env)
    assert upload(env, published, token=reader).status == 403
    assert upload(env, release, token="ghs_" + "x" * 36).status == 401
    before = len(env.emu.violations)
    assert upload(env, release, base=env.base).status == 404  # the API host serves no uploads
    assert env.take_violations(before)  # ... and a client that tries is told so
    wrong = http("GET", env.emu.uploads_url + RELEASES, auth=f"token {env.token}")
    assert wrong.status == 404 and "only asset uploads" in env.take_violations(before)[0]


def test_a_name_github_would_rename_is_a_violation(env: Env) -> None:
    before = len(env.emu.violations)
    assert upload(env, new_release(env, draft=True), name=".hidden").status == 201
    assert "would rename" in env.take_violations(before)[0]


def test_immutable_releases_keep_their_assets(env: Env) -> None:
    env.emu.set_immutable_releases(REPO)
    try:
        draft = new_release(env, draft=True)
        asset = upload(env, draft, name="early.bin").json()  # a draft takes assets
        published = env.call("PATCH", f"{RELEASES}/{draft['id']}", {"draft": False}).json()
        assert published["immutable"] is True
        late = upload(env, published, name="late.bin")
        assert late.status == 422 and "immutable" in late.json()["message"]
        assert env.call("DELETE", f"{RELEASES}/assets/{asset['id']}").status == 422
    finally:
        env.emu.set_immutable_releases(REPO, False)
    assert env.call("DELETE", f"{RELEASES}/assets/{asset['id']}").status == 204
    assert env.call("GET", f"{RELEASES}/assets/{asset['id']}").status == 404
    assert env.call("DELETE", f"{RELEASES}/assets/{asset['id']}").status == 404


def test_an_upload_applied_and_its_answer_lost_is_kept_once(env: Env) -> None:
    release = new_release(env, draft=True)
    env.emu.inject_fault("POST", rf"/repos/{REPO}/releases/{release['id']}/assets", 502, after=True)
    assert upload(env, release, b"kept", name="lost.bin").status == 502
    [asset] = [a for r in env.emu.releases(REPO) if r["id"] == release["id"] for a in r["assets"]]
    assert (asset["name"], asset["state"]) == ("lost.bin", "uploaded")
    assert [c.fault for c in env.emu.calls if c.query.get("name") == "lost.bin"] == [True]


def test_an_upload_cut_short_leaves_an_asset_that_is_not_uploaded(env: Env) -> None:
    """GitHub keeps such an asset (state not "uploaded") under its name until it is deleted."""
    release = new_release(env, draft=True)
    path = release["upload_url"].split("{", 1)[0].removeprefix(env.emu.uploads_url)
    host, port = env.emu.uploads_url.removeprefix("http://").split(":")

    async def cut() -> None:
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write((f"POST {path}?name=cut.bin HTTP/1.1\r\nHost: {host}\r\nAuthorization: token {env.token}\r\n"
                      f"X-GitHub-Api-Version: {API_VERSION}\r\nContent-Type: application/octet-stream\r\n"
                      "Content-Length: 100000\r\n\r\n").encode() + b"x" * 1000)
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        await asyncio.sleep(0.2)

    before = len(env.emu.violations)
    asyncio.run(cut())
    assert env.take_violations(before) == []  # a client that went away is no emulator error
    [asset] = [a for r in env.emu.releases(REPO) if r["id"] == release["id"] for a in r["assets"]]
    assert (asset["name"], asset["state"], asset["digest"]) == ("cut.bin", "open", None)
    assert upload(env, release, name="cut.bin").status == 422  # its name stays taken until it is deleted
    assert env.call("DELETE", f"{RELEASES}/assets/{asset['id']}").status == 204
    assert upload(env, release, name="cut.bin").status == 201
