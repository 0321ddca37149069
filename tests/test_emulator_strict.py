"""The GitHub emulator refuses what GitHub refuses where Retrain depends on it: comments on issues that do
not exist, reactions on comments that do not exist, bodies over GitHub's limits, check-run outputs without
a title, unknown users, unsupported API versions, tokens sent to the archive host; and it can answer
GraphQL with GitHub's rate-limit shapes."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from gidgethub import BadGraphQLRequest, QueryError
from gidgethub.aiohttp import GitHubAPI
from multidict import CIMultiDict

from app.config.settings import Settings
from app.github.client import API_VERSION, installation_client
from app.register import MANIFEST_PATH, exchange_code, load_manifest
from tests.conftest import INSTALLATION_ID
from tests.emulator import GitHubEmulator
from tests.emulator.client import http
from tests.emulator.harness import Env
from tests.emulator.harness import env as env  # the module-scoped emulator fixture
from tests.payloads import comment_event
from workers.jobs.redelivery import redeliver_failed

REPO = "octo/demo"


# --- issues and comments exist before the App answers on them -------------------------------------------------
def test_a_comment_on_an_issue_that_does_not_exist_is_404(env: Env) -> None:
    path = "/repos/octo/demo/issues/4242/comments"
    missing = env.call("POST", path, {"body": "hello"})
    assert (missing.status, missing.json()["message"]) == (404, "Not Found")
    assert env.emu.comments(REPO, 4242) == []
    assert env.emu.open_issue(REPO, 4242) == 4242
    assert env.call("POST", path, {"body": "hello"}).status == 201
    pull = env.emu.open_issue(REPO, pull_request=True)  # the next free number; pull requests share them
    assert pull == 4243 and env.call("POST", f"/repos/octo/demo/issues/{pull}/comments", {"body": "hi"}).status == 201
    assert env.call("POST", "/repos/octo/other/issues/4242/comments", {"body": "x"}).status == 404  # per repository


def test_a_reaction_on_a_comment_that_does_not_exist_is_404(env: Env) -> None:
    path = "/repos/octo/demo/issues/comments/8080/reactions"
    assert env.call("POST", path, {"content": "eyes"}).status == 404
    env.emu.add_comment("octo/other", 12, comment_id=8080)  # a comment of another repository
    assert env.call("POST", path, {"content": "eyes"}).status == 404
    assert env.emu.reactions(REPO, 8080) == []
    assert env.call("POST", "/repos/octo/other/issues/comments/8080/reactions", {"content": "eyes"}).status == 201


def test_the_apps_own_comments_exist_and_take_reactions(env: Env) -> None:
    env.emu.open_issue(REPO, 21)
    mine = env.call("POST", "/repos/octo/demo/issues/21/comments", {"body": "queued"}).json()
    reply = env.call("POST", f"/repos/octo/demo/issues/comments/{mine['id']}/reactions", {"content": "rocket"})
    assert reply.status == 201 and env.emu.reactions(REPO, mine["id"]) == ["rocket"]


def test_an_issue_comment_event_makes_its_issue_and_comment_exist(env: Env) -> None:
    payload = comment_event("/retrain ci", repo=REPO, issue_number=31, comment_id=3101, github=env.emu)
    assert payload["issue"]["number"] == 31
    assert env.call("POST", "/repos/octo/demo/issues/31/comments", {"body": "on it"}).status == 201
    assert env.call("POST", "/repos/octo/demo/issues/comments/3101/reactions", {"content": "eyes"}).status == 201
    env.emu.event_happened("issue_comment", {**payload, "action": "deleted"})
    assert env.call("POST", "/repos/octo/demo/issues/comments/3101/reactions", {"content": "+1"}).status == 404


# --- GitHub's length limits ------------------------------------------------------------------------------------
def test_a_comment_body_over_65536_characters_is_refused_in_githubs_words(env: Env) -> None:
    env.emu.open_issue(REPO, 40)
    path = "/repos/octo/demo/issues/40/comments"
    assert env.call("POST", path, {"body": "x" * 65_536}).status == 201
    assert env.call("POST", path, {"body": "é" * 65_536}).status == 201  # characters, not bytes
    before = len(env.emu.violations)
    reply = env.call("POST", path, {"body": "x" * 65_537})
    assert reply.status == 422
    assert reply.json()["message"] == "Validation Failed"
    assert reply.json()["errors"] == [{"resource": "IssueComment", "code": "unprocessable", "field": "data",
                                       "message": "Body is too long (maximum is 65536 characters)"}]
    assert reply.json()["documentation_url"].endswith("#create-an-issue-comment")
    env.conforms("POST", path, reply)
    assert len(env.emu.comments(REPO, 40)) == 2
    assert "65,537 characters" in env.take_violations(before)[0]


def test_check_run_summary_and_text_over_65535_characters_are_refused_on_create_and_update(env: Env) -> None:
    runs = "/repos/octo/demo/check-runs"
    head = env.emu.head(REPO)
    at_limit = {"title": "t", "summary": "s" * 65_535, "text": "t" * 65_535}
    created = env.call("POST", runs, {"name": "limits", "head_sha": head, "output": at_limit})
    assert created.status == 201
    path = f"{runs}/{created.json()['id']}"
    assert env.call("PATCH", path, {"output": at_limit}).status == 200
    before = len(env.emu.violations)
    for field in ("summary", "text"):
        over = {**at_limit, field: "x" * 65_536}
        assert env.call("POST", runs, {"name": "limits", "head_sha": head, "output": over}).status == 422
        assert env.call("PATCH", path, {"output": {**over, "title": "changed"}}).status == 422
    assert len(env.take_violations(before)) == 4
    assert env.call("GET", path).json()["output"]["title"] == "t"  # refused updates changed nothing
    assert [r["name"] for r in env.emu.check_runs(REPO)].count("limits") == 1


# --- check-run outputs name a title ----------------------------------------------------------------------------
def test_a_check_run_output_without_a_title_is_refused_on_update_and_on_create(env: Env) -> None:
    runs = "/repos/octo/demo/check-runs"
    head = env.emu.head(REPO)
    run = env.call("POST", runs, {"name": "titles", "head_sha": head,
                                  "output": {"title": "Queued", "summary": "waiting"}}).json()
    path = f"{runs}/{run['id']}"
    before = len(env.emu.violations)
    untitled = env.call("PATCH", path, {"status": "in_progress", "output": {"summary": "iteration 3"}})
    assert untitled.status == 422
    assert untitled.json()["message"] == 'Invalid request.\n\n"title" wasn\'t supplied.'
    bare = env.call("POST", runs, {"name": "titles", "head_sha": head, "output": {"text": "details"}})
    assert bare.json()["message"] == 'Invalid request.\n\n"title", "summary" weren\'t supplied.'
    assert len(env.take_violations(before)) == 2
    assert env.call("GET", path).json()["status"] == "queued"  # the refused update changed nothing
    assert env.call("PATCH", path, {"status": "in_progress"}).status == 200  # no output: nothing to title


# --- the permission API knows who exists -----------------------------------------------------------------------
def test_the_permission_of_a_user_github_does_not_know_is_404(env: Env) -> None:
    path = "/repos/octo/demo/collaborators/{}/permission"
    missing = env.call("GET", path.format("no-such-user-anywhere"))
    assert (missing.status, missing.json()["message"]) == (404, "Not Found")
    env.conforms("GET", path.format("no-such-user-anywhere"), missing)
    env.emu.add_user("Stranger")
    known = env.call("GET", path.format("stranger"))  # logins are case-insensitive
    assert known.status == 200 and (known.json()["permission"], known.json()["role_name"]) == ("none", "none")
    env.conforms("GET", path.format("stranger"), known)
    comment_event("/retrain", repo=REPO, sender="commenter", comment_id=5101, github=env.emu)
    assert env.call("GET", path.format("commenter")).json()["permission"] == "none"  # an event's sender exists
    assert env.call("GET", path.format("octo")).status == 200  # the owner exists


def test_every_known_user_may_read_a_public_repository(env: Env) -> None:
    env.emu.add_repository("octo/public", {"README.md": b"hi\n"}, installation_id=42, private=False)
    env.emu.add_user("passer-by")
    reply = env.call("GET", "/repos/octo/public/collaborators/passer-by/permission")
    assert (reply.json()["permission"], reply.json()["role_name"]) == ("read", "read")
    assert env.call("GET", "/repos/octo/public/collaborators/nobody-at-all/permission").status == 404
    env.emu.set_permission("octo/public", "passer-by", "triage")
    assert env.call("GET", "/repos/octo/public/collaborators/passer-by/permission").json()["role_name"] == "triage"


# --- the REST API version ----------------------------------------------------------------------------------------
def test_an_unsupported_api_version_is_400_in_githubs_words(env: Env) -> None:
    path = env.base + "/repos/octo/demo/contents/README.md"
    auth = f"token {env.token}"
    refused = http("GET", path, auth=auth, api_version="v3")
    assert refused.status == 400
    assert refused.json() == {
        "message": "Bad Request", "documentation_url": "https://docs.github.com/rest", "status": "400",
        "errors": 'The version you specified in the "X-GitHub-API-Version" request header, "v3", is not a '
                  'supported version. The following versions are currently supported: "2026-03-10" (most '
                  'recent) and "2022-11-28".'}
    assert http("GET", path, auth=auth, api_version="2021-01-01").status == 400
    for asked, served in (("2022-11-28", "2022-11-28"), ("2026-03-10", "2026-03-10"), (" 2026-03-10 ", "2026-03-10"),
                          (None, "2022-11-28")):  # no header: GitHub's default version
        reply = http("GET", path, auth=auth, api_version=asked)
        assert reply.status == 200 and reply.headers["x-github-api-version-selected"] == served
    graphql = http("POST", env.base + "/graphql", auth=f"bearer {env.token}", body={"query": "{ __typename }"},
                   api_version="v3")  # GitHub does not read the header on GraphQL
    assert graphql.status == 200 and "x-github-api-version-selected" not in graphql.headers
    assert env.emu.calls[-2].api_version is None and env.emu.calls[-1].api_version == "v3"


def test_in_strict_mode_a_rest_call_without_the_version_is_a_violation(env: Env) -> None:
    env.emu.require_api_version = True
    try:
        before = len(env.emu.violations)
        assert http("GET", env.base + "/repos/octo/demo/contents/README.md", auth=f"token {env.token}",
                    api_version=None).status == 200  # GitHub serves it; the emulator notes it
        assert env.take_violations(before) == ["GET /repos/octo/demo/contents/README.md: no X-GitHub-Api-Version "
                                               "header"]
        http("POST", env.base + "/graphql", auth=f"bearer {env.token}", body={"query": "{ __typename }"},
             api_version=None)
        assert env.emu.violations[before:] == []
    finally:
        env.emu.require_api_version = False


def test_every_call_the_app_makes_names_the_api_version(github: tuple[GitHubEmulator, str],
                                                         settings: Settings) -> None:
    """Tokens, REST through gidgethub and raw, GraphQL, the App-JWT delivery endpoints and the manifest code
    exchange; the shared fixture is strict, so a call without the header also fails the test at teardown."""
    emu, base = github
    emu.add_comment("octo/demo", 7, comment_id=7001)
    emu.add_hook_delivery(guid="g-1", event="issue_comment", action="created", status_code=502)

    async def go() -> None:
        async with installation_client(settings, INSTALLATION_ID, repo="octo/demo") as gh:
            await gh.permission("octo/demo", "alice")
            await gh.add_reaction("octo/demo", 7001, "eyes")
            await gh.create_comment("octo/demo", 7, "on it")
            await gh.read_file("octo/demo", "README.md", None)
            head = await gh.branch_head("octo/demo", None)
            await gh.create_check_run("octo/demo", name="v", head_sha=head.oid, external_id="retrain:ci:v",
                                      status="queued")
            entries = (await gh.tree("octo/demo", head.oid))["tree"]
            await gh.blob("octo/demo", next(e["sha"] for e in entries if e["type"] == "blob"))
        await redeliver_failed(settings)
        async with aiohttp.ClientSession() as session:
            await exchange_code(base, emu.add_manifest_code(load_manifest(MANIFEST_PATH), name="Retrain V"),
                                session=session)

    asyncio.run(go())
    paths = {c.path.split("/")[-1] for c in emu.calls}
    assert {"access_tokens", "permission", "reactions", "comments", "README.md", "graphql", "check-runs",
            "deliveries", "attempts", "conversions"} <= paths
    assert {c.api_version for c in emu.calls} == {API_VERSION}


# --- archives come from another host --------------------------------------------------------------------------
def test_a_tarball_redirects_to_another_host_and_a_client_following_it_drops_the_token(env: Env) -> None:
    async def follow() -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as session, session.get(
                env.base + "/repos/octo/demo/tarball/main",
                headers={"Authorization": f"token {env.token}", "X-GitHub-Api-Version": API_VERSION}) as r:
            return r.status, await r.read()

    before = len(env.emu.violations)
    status, archive = asyncio.run(follow())
    assert status == 200 and archive[:2] == b"\x1f\x8b"  # gzip
    [redirect, download] = env.emu.calls[-2:]
    assert (redirect.host, redirect.status) == ("api.github.com", 302)
    assert (download.host, download.status) == ("codeload.github.com", 200)
    assert download.path == f"/octo/demo/legacy.tar.gz/{env.emu.head(REPO)}"
    assert env.emu.violations[before:] == []


def test_the_archive_host_refuses_a_request_that_carries_a_token(env: Env) -> None:
    location = env.call("GET", "/repos/octo/demo/tarball/main").headers["Location"]
    before = len(env.emu.violations)
    leaked = http("GET", location, auth=f"token {env.token}")
    assert leaked.status == 400
    [violation] = env.take_violations(before)
    assert "codeload.github.com" in violation and "Authorization" in violation


# --- GraphQL rate limits -------------------------------------------------------------------------------------
SECONDARY = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
HEAD = '{ repository(owner: "octo", name: "demo") { nameWithOwner } }'
COMMIT = """mutation($input: CreateCommitOnBranchInput!) { createCommitOnBranch(input: $input) { commit { oid } } }"""


def graphql(env: Env, query: str, **variables: object) -> tuple[int, CIMultiDict[str], dict]:
    reply = http("POST", env.base + "/graphql", auth=f"bearer {env.token}",
                 body={"query": query, "variables": variables})
    return reply.status, reply.headers, reply.json()


def commit_input(env: Env, path: str) -> dict:
    return {"branch": {"repositoryNameWithOwner": "octo/commits", "branchName": "main"},
            "expectedHeadOid": env.emu.head("octo/commits"), "message": {"headline": "limits"},
            "fileChanges": {"additions": [{"path": path, "contents": "eA=="}]}}


def test_a_graphql_secondary_limit_is_403_with_or_without_retry_after(env: Env) -> None:
    env.emu.inject_graphql_secondary_limit(retry_after_s=30)
    status, headers, body = graphql(env, HEAD)
    assert (status, headers["retry-after"]) == (403, "30")
    assert body["message"].startswith(SECONDARY) and body["documentation_url"].endswith("#about-secondary-rate-limits")
    assert graphql(env, HEAD)[0] == 200  # once
    env.emu.inject_graphql_secondary_limit(retry_after_s=None, times=2, body_contains="createCommitOnBranch")
    assert graphql(env, HEAD)[0] == 200  # another operation: not this fault's
    head = env.emu.head("octo/commits")
    for _ in range(2):
        status, headers, body = graphql(env, COMMIT, input=commit_input(env, "limited"))
        assert status == 403 and "retry-after" not in headers and body["message"].startswith(SECONDARY)
    assert env.emu.head("octo/commits") == head  # nothing was committed
    assert "errors" not in graphql(env, COMMIT, input=commit_input(env, "limited"))[2]


def test_a_spent_graphql_primary_limit_is_a_200_with_githubs_error_and_headers(env: Env) -> None:
    reset = env.emu.inject_graphql_primary_limit(reset_in_s=120)
    status, headers, body = graphql(env, HEAD)
    assert status == 200
    assert body == {"errors": [{"type": "RATE_LIMITED", "message": "API rate limit exceeded for installation ID 42."}]}
    assert (headers["x-ratelimit-remaining"], headers["x-ratelimit-reset"], headers["x-ratelimit-resource"]) == (
        "0", str(reset), "graphql")
    assert headers["x-ratelimit-limit"] == headers["x-ratelimit-used"] == "5000"
    env.emu.inject_graphql_primary_limit(error_type="RATE_LIMIT")  # the shape seen since 2026
    assert graphql(env, HEAD)[2]["errors"] == [{"type": "RATE_LIMIT", "code": "graphql_rate_limit",
                                                "message": "API rate limit already exceeded for installation ID 42."}]
    env.emu.inject_graphql_primary_limit(after=True, body_contains="createCommitOnBranch")  # applied, answer lost
    head = env.emu.head("octo/commits")
    assert graphql(env, COMMIT, input=commit_input(env, "applied"))[2]["errors"][0]["type"] == "RATE_LIMITED"
    assert env.emu.head("octo/commits") != head and env.emu.read_file("octo/commits", "applied") == b"x"


def test_gidgethub_sees_the_graphql_limits_as_github_gives_them(env: Env) -> None:
    reset = env.emu.inject_graphql_primary_limit()
    env.emu.inject_graphql_secondary_limit(retry_after_s=5)

    async def go() -> None:
        async with aiohttp.ClientSession() as session:
            gh = GitHubAPI(session, "retrain-tests", oauth_token=env.token, base_url=env.base)
            with pytest.raises(QueryError) as primary:
                await gh.graphql(HEAD, endpoint=env.base + "/graphql")
            assert primary.value.response["errors"][0]["type"] == "RATE_LIMITED"
            assert gh.rate_limit is not None and gh.rate_limit.remaining == 0
            assert int(gh.rate_limit.reset_datetime.timestamp()) == reset
            with pytest.raises(BadGraphQLRequest) as secondary:
                await gh.graphql(HEAD, endpoint=env.base + "/graphql")
            assert secondary.value.status_code == 403
            assert secondary.value.response["message"].startswith(SECONDARY)
            assert (await gh.graphql(HEAD, endpoint=env.base + "/graphql"))["repository"]["nameWithOwner"]

    asyncio.run(go())
    assert env.emu.faults.pending() == 0


def test_an_installation_that_spent_its_graphql_points_gets_the_graphql_answer(env: Env) -> None:
    env.emu.set_rate_limit_remaining(42, 0, resource="graphql")
    try:
        status, headers, body = graphql(env, HEAD)
        assert status == 200 and body["errors"][0]["type"] == "RATE_LIMITED"
        assert headers["x-ratelimit-remaining"] == "0" and headers["x-ratelimit-resource"] == "graphql"
        assert env.call("GET", "/repos/octo/demo/contents/README.md").status == 200  # REST counts apart
    finally:
        env.emu.set_rate_limit_remaining(42, 5000, resource="graphql")
