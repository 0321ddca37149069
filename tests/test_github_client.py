"""The GitHub client against the emulator: narrowed and cached tokens, retries that follow GitHub's
rate-limit rules, and the Git Data API fallback for committing."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
from gidgethub import BadRequest

from app.github.auth import SESSION_PERMISSIONS, TokenCache
from app.github.client import StaleHead, installation_client
from tests.conftest import INSTALLATION_ID, REPO
from tests.repos import repo_files


def run(coro):
    return asyncio.run(coro)


def calls(emu, method: str, fragment: str) -> list:
    return [c for c in emu.calls if c.method == method and fragment in c.path]


def test_tokens_are_narrowed_to_the_repository_and_reused(github, settings) -> None:
    emu, _ = github
    tokens = TokenCache()

    async def twice() -> None:
        for _ in range(2):
            async with installation_client(settings, INSTALLATION_ID, repo=REPO, permissions=SESSION_PERMISSIONS,
                                           tokens=tokens) as gh:
                assert await gh.permission(REPO, "alice") == "write"

    run(twice())
    [mint] = calls(emu, "POST", "/access_tokens")
    assert mint.json == {"repositories": ["demo"], "permissions": SESSION_PERMISSIONS}


def test_secondary_rate_limit_waits_as_told_then_succeeds(github, settings) -> None:
    emu, _ = github
    emu.open_issue(REPO, 3)
    emu.inject_fault("POST", r"/repos/octo/demo/issues/\d+/comments", 429, headers={"retry-after": "1"})

    async def comment() -> float:
        async with installation_client(settings, INSTALLATION_ID) as gh:
            start = time.monotonic()
            await gh.create_comment(REPO, 3, "hello")
            return time.monotonic() - start

    assert run(comment()) >= 1.0
    assert [c.status for c in calls(emu, "POST", "/issues/3/comments")] == [429, 201]
    [posted] = emu.comments(REPO, 3)
    assert posted["body"].startswith("hello\n\n<!-- retrain:")  # the marker that finds it again


def test_server_errors_are_retried_and_client_errors_are_not(github, settings) -> None:
    emu, _ = github
    emu.inject_fault("GET", r"/repos/octo/demo/collaborators/alice/permission", 502, times=2)
    reactions = r"/repos/octo/demo/issues/comments/\d+/reactions"
    emu.inject_fault("POST", reactions, 422, body={"message": "Validation Failed"})

    async def go() -> str:
        async with installation_client(settings, INSTALLATION_ID) as gh:
            with pytest.raises(BadRequest):
                await gh.add_reaction(REPO, 9, "eyes")
            return await gh.permission(REPO, "alice")

    assert run(go()) == "write"
    assert [c.status for c in calls(emu, "GET", "/permission")] == [502, 502, 200]
    assert [c.status for c in calls(emu, "POST", "/reactions")] == [422]


def test_primary_rate_limit_waits_for_the_reset(github, settings) -> None:
    emu, _ = github
    reset = int(time.time()) + 1
    limit = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset), "x-ratelimit-limit": "5000"}
    permission = r"/repos/octo/demo/collaborators/\w+/permission"
    emu.inject_fault("GET", permission, 403, headers=limit, body={"message": "API rate limit exceeded"})

    async def go() -> str:
        async with installation_client(settings, INSTALLATION_ID) as gh:
            return await gh.permission(REPO, "bob")

    assert run(go()) == "read"
    assert time.time() >= reset


def test_commits_fall_back_to_the_git_data_api_when_graphql_cannot(github, settings) -> None:
    emu, _ = github
    head = emu.head(REPO)
    forbidden = {"data": {"createCommitOnBranch": None},
                 "errors": [{"type": "FORBIDDEN", "message": "Resource not accessible by integration"}]}
    emu.inject_fault("POST", r"/graphql", 200, body=forbidden)

    async def go(files: dict[str, bytes]) -> str:
        async with installation_client(settings, INSTALLATION_ID) as gh:
            return await gh.commit_files(REPO, "main", head, files, "msg", "body")

    oid = run(go({"a/b.json": b"{}\n", "c.txt": b"x"}))
    assert emu.head(REPO) == oid and emu.git_log(REPO)[0]["parents"] == [head]
    assert emu.read_file(REPO, "a/b.json") == b"{}\n" and emu.read_file(REPO, "README.md") is not None
    assert calls(emu, "PATCH", "/git/refs/heads/main")[0].json == {"sha": oid, "force": False}

    # The fallback's compare-and-swap: a ref that moved on is a stale head, not an overwrite.
    emu.inject_fault("POST", r"/graphql", 200, body=forbidden)
    with pytest.raises(StaleHead):
        run(go({"c.txt": b"another session's progress"}))
    assert emu.head(REPO) == oid


def test_git_data_blobs_carry_exact_bytes(github, settings) -> None:
    emu, _ = github
    head = emu.head(REPO)
    emu.inject_fault("POST", r"/graphql", 200, body={"errors": [{"type": "FORBIDDEN", "message": "no"}]})
    payload = bytes(range(256))

    async def go() -> str:
        async with installation_client(settings, INSTALLATION_ID) as gh:
            return await gh.commit_files(REPO, "main", head, {"bin.dat": payload}, "binary", "")

    run(go())
    assert emu.read_file(REPO, "bin.dat") == payload
    [blob] = calls(emu, "POST", "/git/blobs")
    assert base64.b64decode(blob.json["content"]) == payload


def test_a_tree_lists_a_commit_and_blobs_come_back_as_their_bytes(github, settings) -> None:
    emu, _ = github
    head = emu.head(REPO)

    async def read() -> tuple[dict, dict, bytes]:
        async with installation_client(settings, INSTALLATION_ID, repo=REPO, permissions=SESSION_PERMISSIONS) as gh:
            everything = await gh.tree(REPO, head)
            top = await gh.tree(REPO, head, recursive=False)
            [garden] = [e for e in everything["tree"] if e["path"] == "notes/garden.md"]
            return everything, top, await gh.blob(REPO, garden["sha"])

    everything, top, garden = run(read())
    assert everything["truncated"] is False and everything["sha"] == top["sha"]
    assert {e["path"] for e in top["tree"]} == {".github", "README.md", "notes"}
    assert {e["path"] for e in everything["tree"] if e["type"] == "blob"} == set(repo_files())
    assert garden == emu.read_file(REPO, "notes/garden.md")
    [listing, listed, blob] = [c for c in emu.calls if "/git/" in c.path]
    assert listing.query == {"recursive": "1"} and listed.query == {}
    assert blob.path.startswith("/repos/octo/demo/git/blobs/") and blob.status == 200
