"""The GitHub client in the sequences that break naive retries, caused for real against the emulator: an
answer lost after GitHub carried the request out, GraphQL's own rate limits, a ref update GitHub refuses
for a rule, and a force-push that rewound the branch under a Git Data commit."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
from gidgethub import BadRequest

from app.github.auth import SESSION_PERMISSIONS
from app.github.client import CommitRefused, StaleHead, installation_client
from tests.conftest import INSTALLATION_ID, REPO
from tests.emulator.faults import DROP_CONNECTION

COMMENTS = r"/repos/octo/demo/issues/\d+/comments"
CHECK_RUNS = r"/repos/octo/demo/check-runs"
MUTATION = "createCommitOnBranch"


def run(coro):
    return asyncio.run(coro)


def calls(emu, method: str, fragment: str) -> list:
    return [c for c in emu.calls if c.method == method and fragment in c.path]


async def _client_call(settings, call):
    async with installation_client(settings, INSTALLATION_ID, repo=REPO, permissions=SESSION_PERMISSIONS) as gh:
        return await call(gh)


@pytest.mark.parametrize("lost", [502, DROP_CONNECTION], ids=["502-after-applied", "connection-dropped"])
def test_a_comment_whose_answer_is_lost_is_posted_once(github, settings, lost, fault_report) -> None:
    emu, _ = github
    emu.open_issue(REPO, 3)
    emu.inject_fault("POST", COMMENTS, lost, after=True)
    posted = run(_client_call(settings, lambda gh: gh.create_comment(REPO, 3, "queued")))
    bodies = [c["body"] for c in emu.comments(REPO, 3)]
    assert len(bodies) == 1 and bodies[0].startswith("queued"), bodies
    assert posted["id"] == emu.comments(REPO, 3)[0]["id"]
    assert [c.status for c in calls(emu, "POST", "/issues/3/comments")] == [lost]  # found, not posted again
    fault_report(f"comment POST applied, answer lost ({lost or 'dropped'})", f"{len(bodies)} comment")


@pytest.mark.parametrize("lost", [502, DROP_CONNECTION], ids=["502-after-applied", "connection-dropped"])
def test_a_check_run_whose_answer_is_lost_is_created_once(github, settings, lost, fault_report) -> None:
    emu, _ = github
    head = emu.head(REPO)
    emu.inject_fault("POST", CHECK_RUNS, lost, after=True)
    check = run(_client_call(settings, lambda gh: gh.create_check_run(
        REPO, name="retrain / ci", head_sha=head, external_id="retrain:ci:s1", status="queued",
        output={"title": "Queued", "summary": "waiting"})))
    runs = emu.check_runs(REPO)
    assert [r["id"] for r in runs] == [check.id], runs
    fault_report(f"check run POST applied, answer lost ({lost or 'dropped'})", f"{len(runs)} check run")


def test_a_second_check_run_of_the_same_name_is_still_created(github, settings) -> None:
    """The look-up matches the external id, not the name: two sessions on one commit get two check runs."""
    emu, _ = github
    head = emu.head(REPO)

    async def two(gh) -> None:
        for sid in ("s1", "s2"):
            await gh.create_check_run(REPO, name="retrain / ci", head_sha=head, external_id=f"retrain:ci:{sid}",
                                      status="queued", output={"title": "Queued", "summary": "waiting"})

    emu.inject_fault("POST", CHECK_RUNS, 502, after=True)  # the first one's answer is lost
    run(_client_call(settings, two))
    assert sorted(r["external_id"] for r in emu.check_runs(REPO)) == ["retrain:ci:s1", "retrain:ci:s2"]


def _commit(settings, head: str, content: bytes = b"{}"):
    return _client_call(settings, lambda gh: gh.commit_files(REPO, "main", head, {"p/metadata.json": content},
                                                           "retrain: test", "body"))


def test_graphql_secondary_limit_is_waited_out_and_commits_through_graphql(github, settings, fault_report) -> None:
    """A 403 on /graphql with retry-after: GitHub's secondary limit. Before, it fell through to five Git
    Data writes at once, the burst the limit asks us not to make."""
    emu, _ = github
    head = emu.head(REPO)
    emu.inject_fault("POST", "/graphql", 403, headers={"retry-after": "1"}, body_contains=MUTATION)
    start = time.monotonic()
    oid = run(_commit(settings, head))
    assert time.monotonic() - start >= 1.0
    assert emu.head(REPO) == oid
    assert calls(emu, "POST", "/git/") == [], "no Git Data fallback on a rate limit"
    fault_report("GraphQL commit answered 403 secondary limit (retry-after 1)", "waited, committed via GraphQL")


def test_graphql_rate_limited_waits_until_its_reset(github, settings, fault_report) -> None:
    """GraphQL's primary limit is a 200 with errors of type RATE_LIMITED; the wait is x-ratelimit-reset."""
    emu, _ = github
    head = emu.head(REPO)
    reset = int(time.time()) + 2
    emu.inject_fault("POST", "/graphql", 200, body_contains=MUTATION, body={"errors": [
        {"type": "RATE_LIMITED", "message": f"API rate limit exceeded for installation ID {INSTALLATION_ID}."}]},
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-limit": "5000", "x-ratelimit-used": "5000",
                 "x-ratelimit-reset": str(reset), "x-ratelimit-resource": "graphql"})
    oid = run(_commit(settings, head))
    assert reset <= time.time() < reset + 30, "waited for the reset, not a fixed minute"
    assert emu.head(REPO) == oid and calls(emu, "POST", "/git/") == []
    fault_report("GraphQL commit answered RATE_LIMITED (reset in 2 s)", "waited for the reset, committed")


def _graphql_unavailable(emu) -> None:
    """createCommitOnBranch fails for a reason that is neither a stale head nor a limit: Git Data is used."""
    emu.inject_fault("POST", "/graphql", 200, body_contains=MUTATION, times=5, body={"errors": [
        {"type": "FORBIDDEN", "message": "Resource not accessible by integration"}]})


def test_a_protected_branch_refusal_is_reported_as_such_not_retried_as_stale(github, settings,
                                                                              fault_report) -> None:
    emu, _ = github
    head = emu.head(REPO)
    _graphql_unavailable(emu)
    emu.inject_fault("PATCH", r"/repos/octo/demo/git/refs/heads/main", 422,
                     body={"message": "Protected branch update failed for refs/heads/main.",
                           "documentation_url": "https://docs.github.com/articles/about-protected-branches"})
    with pytest.raises(CommitRefused, match="Protected branch update failed") as refused:
        run(_commit(settings, head))
    assert "branch protection" in str(refused.value)
    assert emu.head(REPO) == head
    assert len(calls(emu, "PATCH", "/git/refs/")) == 1, "a rule is not a moved branch: asked once"
    fault_report("ref update answered 422 protected branch", "CommitRefused, reported; not retried")


def test_git_data_fallback_does_not_republish_commits_a_force_push_removed(github, settings, fault_report) -> None:
    """The session read head E; a force-push rewinds the branch to E's parent; a non-forced update from the
    parent to a child of E is a fast-forward, and would bring E back. The ref is compared first."""
    emu, _ = github
    emu.commit_files(REPO, {"notes.txt": b"to be removed"}, message="a commit someone takes back")
    removed = emu.head(REPO)
    parent = emu.git_log(REPO)[1]["oid"]
    git = emu.repos[REPO].git
    assert git.update_ref("refs/heads/main", parent, removed)  # the force-push
    _graphql_unavailable(emu)
    with pytest.raises(StaleHead):
        run(_commit(settings, removed))
    assert emu.head(REPO) == parent, "the removed commit must stay removed"
    assert calls(emu, "PATCH", "/git/refs/") == []
    fault_report("force-push rewound the branch before a Git Data commit", "StaleHead; removed commit stays out")


def test_graphql_commit_committed_once_when_its_answer_is_lost(github, settings) -> None:
    """The mutation ran and its answer was lost: the retry is refused as stale (the head moved, by us)."""
    emu, _ = github
    head = emu.head(REPO)
    emu.inject_fault("POST", "/graphql", 502, after=True, body_contains=MUTATION)
    with pytest.raises(StaleHead):
        run(_commit(settings, head, base64.b64encode(b"x")))
    assert len([c for c in emu.git_log(REPO) if c["message"].startswith("retrain: test")]) == 1


def test_text_over_githubs_limits_is_cut_and_says_so_rather_than_refused(github, settings) -> None:
    """GitHub refuses a comment over 65,536 characters and check-run text over 65,535 (the emulator too):
    a long report arrives cut, with a note, instead of not at all."""
    emu, _ = github
    emu.open_issue(REPO, 3)
    head = emu.head(REPO)
    long = "a session note, é. " * 6000  # 114,000 characters, 120,000 UTF-8 bytes

    async def go(gh) -> None:
        await gh.create_comment(REPO, 3, long)
        check = await gh.create_check_run(REPO, name="retrain / ci", head_sha=head, external_id="retrain:ci:s9",
                                          status="queued", output={"title": "Queued", "summary": long})
        await gh.update_check_run(REPO, check.id, status="completed", conclusion="failure",
                                  output={"title": "Failed", "summary": long, "text": long})

    run(_client_call(settings, go))
    [comment] = emu.comments(REPO, 3)
    assert len(comment["body"]) <= 65536 and "cut: GitHub takes at most" in comment["body"]
    [check] = emu.check_runs(REPO)
    assert check["conclusion"] == "failure"
    summary = check["output"]["summary"]
    assert len(summary.encode()) <= 65535 and summary.endswith("65,535 bytes here)")  # GitHub counts bytes there


def test_graphql_limit_in_its_newer_shape_is_waited_out_not_sent_to_git_data(github, settings) -> None:
    emu, _ = github
    head = emu.head(REPO)
    reset = emu.inject_graphql_primary_limit(reset_in_s=2, error_type="RATE_LIMIT", body_contains=MUTATION)
    oid = run(_commit(settings, head))
    assert reset <= time.time() < reset + 30
    assert emu.head(REPO) == oid and calls(emu, "POST", "/git/") == []


def test_graphql_5xx_with_an_html_page_is_retried(github, settings) -> None:
    """GitHub's 502s are often an HTML page; gidgethub fails decoding it before it looks at the status."""
    emu, _ = github
    emu.inject_fault("POST", "/graphql", 502, body="<html><body><h1>502 Bad Gateway</h1></body></html>")
    head = run(_client_call(settings, lambda gh: gh.branch_head(REPO, "main")))
    assert head.oid == emu.head(REPO)
    assert [c.status for c in calls(emu, "POST", "/graphql")] == [502, 200]


def test_a_graphql_403_that_is_no_limit_still_commits_through_git_data(github, settings) -> None:
    emu, _ = github
    head = emu.head(REPO)
    emu.inject_fault("POST", "/graphql", 403, body_contains=MUTATION,
                     body={"message": "Resource not accessible by integration",
                           "documentation_url": "https://docs.github.com/graphql"})
    oid = run(_commit(settings, head))
    assert emu.head(REPO) == oid
    assert len(calls(emu, "PATCH", "/git/refs/")) == 1


def test_one_call_waits_at_most_max_wait_in_all(github, settings, monkeypatch) -> None:
    """Four waits under the cap each would add up to four times it; the cap is for the call."""
    import app.github.retry as retry

    emu, _ = github
    monkeypatch.setattr(retry, "MAX_WAIT_S", 2.5)
    emu.inject_fault("GET", r"/repos/octo/demo/collaborators/alice/permission", 429, headers={"retry-after": "1"},
                     times=5)
    start = time.monotonic()
    with pytest.raises(BadRequest):
        run(_client_call(settings, lambda gh: gh.permission(REPO, "alice")))
    assert time.monotonic() - start < 4.5
    assert len(calls(emu, "GET", "/permission")) < 5


def test_a_graphql_secondary_limit_told_in_a_200_waits_its_retry_after(github, settings) -> None:
    emu, _ = github
    emu.inject_fault("POST", "/graphql", 200, headers={"retry-after": "2"}, body={"errors": [
        {"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}]})
    start = time.monotonic()
    head = run(_client_call(settings, lambda gh: gh.branch_head(REPO, "main")))
    assert head.oid == emu.head(REPO)
    assert 2.0 <= time.monotonic() - start < 30, "waited as told, not GitHub's minute"
