"""Injected faults and rate limits in the GitHub emulator, and the App's webhook deliveries."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from gidgethub import BadRequest, RateLimitExceeded
from gidgethub.aiohttp import GitHubAPI

from tests.emulator.client import http
from tests.emulator.harness import INSTALLATION, Env, app_jwt
from tests.emulator.harness import env as env  # the module-scoped emulator fixture

COMMENTS = "/repos/octo/demo/issues/3/comments"
SECONDARY = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."


def test_a_fault_answers_exactly_times_then_normal_service(env: Env) -> None:
    env.emu.open_issue("octo/demo", 3)
    env.emu.inject_fault("POST", r"/repos/.*/issues/\d+/comments", 502, times=2)
    first, second = (env.call("POST", COMMENTS, {"body": f"try {i}"}) for i in (1, 2))
    assert (first.status, first.json()) == (502, {"message": "Server Error"}) and second.status == 502
    assert env.call("POST", COMMENTS, {"body": "try 3"}).status == 201
    assert [c["body"] for c in env.emu.comments("octo/demo", 3)] == ["try 3"]  # faults change nothing
    assert [(c.status, c.fault, c.json) for c in env.emu.calls[-3:]] == [
        (502, True, {"body": "try 1"}), (502, True, {"body": "try 2"}), (201, False, {"body": "try 3"})]
    assert env.emu.faults.pending() == 0


def test_a_fault_after_the_request_carries_it_out_and_loses_the_answer(env: Env) -> None:
    env.emu.open_issue("octo/demo", 3)
    env.emu.inject_fault("POST", r"/repos/.*/issues/\d+/comments", 502, after=True, body_contains="lost")
    assert env.call("POST", COMMENTS, {"body": "kept"}).status == 201  # another body: not this fault's
    lost = env.call("POST", COMMENTS, {"body": "answer lost"})
    assert (lost.status, lost.json()) == (502, {"message": "Server Error"})
    assert [c["body"] for c in env.emu.comments("octo/demo", 3)][-2:] == ["kept", "answer lost"]  # yet it is there
    assert env.emu.faults.pending() == 0


def test_faults_match_method_and_the_whole_path(env: Env) -> None:
    before = len(env.emu.violations)
    env.emu.inject_fault("GET", r"/repos/octo/demo/contents/README\.md", 500, body={"message": "custom"},
                         headers={"x-custom": "1"})
    assert env.call("GET", "/repos/octo/demo/contents/README.md.bak").status == 404  # no full match
    assert env.call("POST", "/repos/octo/demo/contents/README.md").status != 500  # other method
    reply = env.call("GET", "/repos/octo/demo/contents/README.md")
    assert (reply.status, reply.json(), reply.headers["x-custom"]) == (500, {"message": "custom"}, "1")
    env.emu.inject_fault("*", r"/graphql", 503, times=5)
    assert http("POST", env.base + "/graphql", body={"query": "{ __typename }"}).status == 503
    env.emu.clear_faults()
    assert env.emu.faults.pending() == 0
    assert len(env.take_violations(before)) == 1  # the POST GitHub does not document


def test_primary_rate_limit(env: Env) -> None:
    reset = env.emu.inject_primary_rate_limit("GET", r"/repos/octo/demo/contents/.*", reset_in_s=120)
    reply = env.call("GET", "/repos/octo/demo/contents/README.md")
    assert reply.status == 403
    h = reply.headers
    assert (h["x-ratelimit-remaining"], h["x-ratelimit-reset"], h["x-ratelimit-limit"], h["x-ratelimit-used"],
            h["x-ratelimit-resource"]) == ("0", str(reset), "5000", "5000", "core")
    body = reply.json()
    assert body["message"].startswith(f"API rate limit exceeded for installation ID {INSTALLATION}. If you reach "
                                      f"out to GitHub Support for help, please include the request ID "
                                      f"{h['x-github-request-id']} and timestamp ")
    assert body["documentation_url"] == "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
    assert body["status"] == "403"
    assert env.call("GET", "/repos/octo/demo/contents/README.md").status == 200


def test_gidgethub_reads_the_limits_as_github_s(env: Env) -> None:
    env.emu.inject_primary_rate_limit("GET", r"/repos/octo/demo/collaborators/.*")
    env.emu.inject_secondary_rate_limit("GET", r"/repos/octo/demo/collaborators/.*")
    env.emu.add_user("x")

    async def go() -> None:
        async with aiohttp.ClientSession() as session:
            gh = GitHubAPI(session, "retrain-tests", oauth_token=env.token, base_url=env.base)
            path = "/repos/octo/demo/collaborators/x/permission"
            with pytest.raises(RateLimitExceeded):
                await gh.getitem(path)
            with pytest.raises(BadRequest, match="secondary rate limit"):
                await gh.getitem(path)
            assert (await gh.getitem(path))["permission"] == "none"
            assert gh.rate_limit is not None and 0 < gh.rate_limit.remaining < 5000

    asyncio.run(go())


def test_secondary_rate_limits_with_retry_after(env: Env) -> None:
    env.emu.inject_secondary_rate_limit("POST", "/graphql", status=429, retry_after_s=30)
    env.emu.inject_secondary_rate_limit("POST", COMMENTS, retry_after_s=None)
    limited = http("POST", env.base + "/graphql", auth=f"bearer {env.token}", body={"query": "{ __typename }"})
    assert limited.status == 429 and limited.headers["retry-after"] == "30"
    assert limited.json()["message"].startswith(SECONDARY + " If you reach out to GitHub Support")
    assert limited.json()["documentation_url"].endswith("#about-secondary-rate-limits")
    forbidden = env.call("POST", COMMENTS, {"body": "x"})
    assert forbidden.status == 403 and "retry-after" not in forbidden.headers
    assert forbidden.json()["message"].startswith(SECONDARY)
    assert env.gql("{ __typename }") == {"data": {"__typename": "Query"}}


def test_every_answer_carries_rate_limit_headers(env: Env) -> None:
    path = "/repos/octo/demo/collaborators/x/permission"
    first, second = env.call("GET", path).headers, env.call("GET", path).headers
    assert first["x-ratelimit-limit"] == "5000" and first["x-ratelimit-resource"] == "core"
    assert int(second["x-ratelimit-remaining"]) == int(first["x-ratelimit-remaining"]) - 1
    assert int(second["x-ratelimit-used"]) == int(first["x-ratelimit-used"]) + 1
    assert int(first["x-ratelimit-reset"]) > time.time() and first["x-github-request-id"]
    graphql = http("POST", env.base + "/graphql", auth=f"bearer {env.token}", body={"query": "{ __typename }"})
    assert graphql.headers["x-ratelimit-resource"] == "graphql"
    other = env.emu.tokens.mint(env.emu.installations[7]).token  # another installation counts on its own
    assert env.call("GET", "/repos/elsewhere/private/contents/x", auth=f"token {other}").headers[
        "x-ratelimit-used"] == "1"
    assert env.call("GET", path, auth=None).headers["x-ratelimit-limit"] == "60"  # unauthenticated


def test_a_spent_budget_answers_403_until_it_resets(env: Env) -> None:
    env.emu.open_issue("octo/demo", 3)
    env.emu.set_rate_limit_remaining(INSTALLATION, 1)
    try:
        last = env.call("POST", COMMENTS, {"body": "last one"})
        assert last.status == 201 and last.headers["x-ratelimit-remaining"] == "0"
        refused = env.call("POST", COMMENTS, {"body": "one too many"})
        assert refused.status == 403 and refused.json()["message"].startswith("API rate limit exceeded")
        assert [c["body"] for c in env.emu.comments("octo/demo", 3)][-1] == "last one"
    finally:
        env.emu.set_rate_limit_remaining(INSTALLATION, 5000)


def test_webhook_deliveries_and_redelivery(env: Env) -> None:
    failed = env.emu.add_hook_delivery(guid="g-1", event="issue_comment", action="created",
                                       installation_id=INSTALLATION, repository_id=env.emu.repos["octo/demo"].id)
    env.emu.add_hook_delivery(guid="g-2", event="issue_comment", action="created", status_code=200)
    newest = env.emu.add_hook_delivery(guid="g-3", event="workflow_dispatch", status_code=504)
    reply = env.app_call("GET", "/app/hook/deliveries")
    assert reply.status == 200 and [d["guid"] for d in reply.json()] == ["g-3", "g-2", "g-1"]  # newest first
    env.conforms("GET", "/app/hook/deliveries", reply)
    assert reply.json()[2]["status"] == "Invalid HTTP Response: 502" and reply.json()[1]["status"] == "OK"
    page = env.app_call("GET", "/app/hook/deliveries?per_page=2")
    assert [d["guid"] for d in page.json()] == ["g-3", "g-2"] and page.json()[0]["id"] == newest
    link = page.headers["Link"]
    assert link.endswith('>; rel="next"') and "cursor=" in link
    rest = http("GET", link[1:link.index(">")], auth=f"Bearer {app_jwt()}")
    assert [d["guid"] for d in rest.json()] == ["g-1"] and "Link" not in rest.headers
    failures = env.app_call("GET", "/app/hook/deliveries?status=failure")
    assert [d["guid"] for d in failures.json()] == ["g-3", "g-1"]
    assert env.call("GET", "/app/hook/deliveries").status == 401  # an installation token is not the App

    attempt = env.app_call("POST", f"/app/hook/deliveries/{failed}/attempts")
    assert attempt.status == 202 and attempt.body == b""  # GitHub's handler answers deliver_empty
    assert env.emu.redelivery_requests == [failed]
    unknown = env.app_call("POST", "/app/hook/deliveries/1/attempts")
    assert unknown.status == 404 and unknown.json()["message"] == "Not Found"
    assert env.call("POST", f"/app/hook/deliveries/{failed}/attempts").status == 401
    env.emu.redelivery_status_code = 200
    assert env.app_call("POST", f"/app/hook/deliveries/{failed}/attempts").status == 202
    latest = env.app_call("GET", "/app/hook/deliveries?per_page=1").json()[0]
    assert (latest["guid"], latest["redelivery"], latest["status_code"]) == ("g-1", True, 200)
    assert env.emu.redelivery_requests == [failed, failed]
