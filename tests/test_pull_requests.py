"""`/retrain` on pull requests and the buttons of check runs on other branches (issue 15, points 1, 2, 5, 6).

The decisions run through the events job against the emulator (which models pull requests, same-repository
and fork heads, and the `pull_requests` permission); the sessions run end to end with the real receiver,
Celery workers and Redis.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.config.settings import Settings
from app.features.check_runs import external_id
from tests.conftest import INSTALLATION_ID, REPO
from tests.emulator import GitHubEmulator
from tests.payloads import comment_event
from tests.processes import wait_until
from tests.repos import TINY_CONFIG
from tests.services import post, retrain_services
from workers.jobs.events import handle_event

RUN_DIR = ".training-progress/nanecho-cached-ci"
SESSION_TIMEOUT = 240
NEW_TEXT = {"notes/pr/added.md": ("The pull request adds these lines of text, again and again. " * 40).encode()}


def pr_comment(emu: GitHubEmulator, body: str, number: int, *, sender: str = "alice", comment_id: int) -> dict:
    return comment_event(body, sender=sender, repo=REPO, installation_id=INSTALLATION_ID, issue_number=number,
                         comment_id=comment_id, github=emu, pull_request=True)


def handle(settings: Settings, payload: dict, delivery: str, event: str = "issue_comment") -> tuple[str, list]:
    sent: list[dict[str, Any]] = []
    return asyncio.run(handle_event(settings, event, delivery, payload, sent.append)), sent


def same_repo_pull(emu: GitHubEmulator, files: dict[str, bytes | None] | None = None) -> int:
    emu.commit_files(REPO, files or NEW_TEXT, message="more text", branch="more-text")
    return emu.open_pull(REPO, "more-text")


def test_a_pull_request_session_reads_the_pull_request_and_puts_its_check_run_on_the_head(github, settings) -> None:
    emu, _ = github
    number = same_repo_pull(emu)
    head = emu.head(REPO, "more-text")
    outcome, sent = handle(settings, pr_comment(emu, "/retrain", number, comment_id=3001), "pr-1")
    assert outcome.startswith("enqueued"), outcome
    request = sent[0]["request"]
    assert (request["pull_number"], request["pull_head_sha"], request["pull_head_ref"]) == (number, head, "more-text")
    assert "pull_commit" not in request and request["branch"] == "main"
    assert sent[0]["run"] == f"nanecho-cached-ci:pull-{number}"  # its own queue: never waits for main's sessions
    [check] = emu.check_runs(REPO)
    assert check["head_sha"] == head
    # only the pull request's task asked for the pull_requests permission
    mints = [c for c in emu.calls if c.path.endswith("/access_tokens")]
    assert any((c.json or {}).get("permissions", {}).get("pull_requests") == "read" for c in mints)


def test_a_pull_request_runs_with_its_base_config_never_its_own(github, settings) -> None:
    """A head that adds a profile (or raises a limit) changes nothing: the base branch's config decides."""
    emu, _ = github
    config = yaml.safe_load(TINY_CONFIG)
    config["profiles"]["huge"] = {**config["profiles"]["ci"], "max_iters": 10_000}
    config["permission"] = "read"
    number = same_repo_pull(emu, {".github/retrain.yml": yaml.safe_dump(config).encode(), **NEW_TEXT})
    outcome, sent = handle(settings, pr_comment(emu, "/retrain huge", number, comment_id=3002), "pr-2")
    assert outcome == "rejected: unknown profile" and sent == []
    outcome, sent = handle(settings, pr_comment(emu, "/retrain", number, comment_id=3003), "pr-3")
    assert outcome.startswith("enqueued")
    # nor a base branch its author picked: the default branch's config is the repository's policy
    emu.commit_files(REPO, {".github/retrain.yml": yaml.safe_dump(config).encode()}, branch="legacy")
    emu.set_permission(REPO, "mallory", "read")
    fork = emu.open_fork_pull(REPO, "mallory", NEW_TEXT, base="legacy")
    outcome, sent = handle(settings, pr_comment(emu, "/retrain ok-to-test", fork, sender="mallory",
                                                comment_id=3004), "pr-4")
    assert outcome.startswith("refused") and sent == []
    outcome, sent = handle(settings, pr_comment(emu, "/retrain ok-to-test", fork, comment_id=3005), "pr-5")
    assert outcome.startswith("enqueued")  # alice may approve: `write` on the default branch's config
    outcome, sent = handle(settings, pr_comment(emu, "/retrain huge", fork, comment_id=3006), "pr-6")
    assert outcome == "rejected: unknown profile" and sent == []


def test_a_fork_pull_request_waits_for_an_explicit_approval_of_its_head(github, settings) -> None:
    emu, _ = github
    number = emu.open_fork_pull(REPO, "mallory", NEW_TEXT)
    emu.set_permission(REPO, "mallory", "read")
    # the fork's author cannot start it, nor approve it
    outcome, sent = handle(settings, pr_comment(emu, "/retrain", number, sender="mallory", comment_id=3010), "f-1")
    assert outcome.startswith("refused") and sent == []
    outcome, sent = handle(settings, pr_comment(emu, "/retrain ok-to-test", number, sender="mallory",
                                                comment_id=3011), "f-2")
    assert outcome.startswith("refused") and sent == []
    # a maintainer's plain /retrain is not an approval
    outcome, sent = handle(settings, pr_comment(emu, "/retrain", number, comment_id=3012), "f-3")
    assert outcome.startswith("refused: pull request") and "ok-to-test" in outcome and sent == []
    assert "ok-to-test" in emu.comments(REPO, number)[-1]["body"]
    # the approval runs it, on the fork's head, with the base's config
    outcome, sent = handle(settings, pr_comment(emu, "/retrain ok-to-test", number, comment_id=3013), "f-4")
    assert outcome.startswith("enqueued"), outcome
    head = sent[0]["request"]["pull_head_sha"]
    # a new push needs a new approval
    emu.push_to_fork_pull(REPO, number, {"notes/pr/more.md": b"yet more text " * 50})
    outcome, sent = handle(settings, pr_comment(emu, "/retrain", number, comment_id=3014), "f-5")
    assert outcome.startswith("refused: pull request") and sent == []
    assert head != emu.repos[REPO].git.resolve(f"refs/pull/{number}/head")


def test_an_approval_naming_its_commit_approves_only_that_head(github, settings) -> None:
    """The approver saw head A; the fork pushed B before the comment was handled: B is not approved."""
    emu, _ = github
    number = emu.open_fork_pull(REPO, "mallory", NEW_TEXT)
    seen = emu.repos[REPO].git.resolve(f"refs/pull/{number}/head")
    emu.push_to_fork_pull(REPO, number, {"notes/pr/evil.md": b"pushed after the look " * 40})
    outcome, sent = handle(settings, pr_comment(emu, f"/retrain ok-to-test {seen[:7]}", number, comment_id=3040),
                           "a-1")
    assert outcome.startswith("refused: the approval names") and sent == []
    outcome, sent = handle(settings, pr_comment(emu, "/retrain", number, comment_id=3041), "a-2")
    assert outcome.startswith("refused: pull request") and sent == []  # nothing was approved
    head = emu.repos[REPO].git.resolve(f"refs/pull/{number}/head")
    assert f"/retrain ok-to-test {head[:7]}" in emu.comments(REPO, number)[-1]["body"]
    outcome, sent = handle(settings, pr_comment(emu, f"/retrain ok-to-test {head[:7]}", number, comment_id=3042),
                           "a-3")
    assert outcome.startswith("enqueued") and sent[0]["request"]["pull_head_sha"] == head
    outcome, sent = handle(settings, pr_comment(emu, "/retrain ok-to-test main", number, comment_id=3043), "a-4")
    assert outcome == "rejected: malformed command" and sent == []


def test_a_reply_quotes_the_command_without_pinging_anyone_again(github, settings) -> None:
    emu, _ = github
    payload = comment_event("/retrain nosuch @octo/everyone \x1b[2J", repo=REPO, installation_id=INSTALLATION_ID,
                            comment_id=3050, github=emu)
    handle(settings, payload, "q-1")
    body = emu.comments(REPO, 7)[-1]["body"]
    [quote] = [line for line in body.splitlines() if line.startswith("> ")]
    assert "@octo/everyone" not in quote and "@\u2060octo/everyone" in quote
    assert "\x1b" not in body  # (the reason names the argument in a code span, where GitHub links no one)


def test_ok_to_test_on_an_issue_is_refused(github, settings) -> None:
    emu, _ = github
    payload = comment_event("/retrain ok-to-test", repo=REPO, installation_id=INSTALLATION_ID, comment_id=3020,
                            github=emu)
    outcome, sent = handle(settings, payload, "i-1")
    assert outcome == "rejected: malformed command" and sent == []


def test_an_installation_without_the_pull_requests_permission_is_told_and_keeps_working_elsewhere(
        github, settings) -> None:
    """An App that adds a permission waits for each installation's owner to accept it; until then a pull
    request's command says so, and everything else goes on (its tokens do not ask for the permission)."""
    emu, _ = github
    number = same_repo_pull(emu)
    granted = dict(emu.installations[INSTALLATION_ID].permissions)
    emu.set_installation_permissions(INSTALLATION_ID, {k: v for k, v in granted.items() if k != "pull_requests"})
    outcome, sent = handle(settings, pr_comment(emu, "/retrain", number, comment_id=3030), "np-1")
    assert outcome == "refused: the installation lacks the pull_requests permission" and sent == []
    assert "`pull_requests` permission" in emu.comments(REPO, number)[-1]["body"]
    outcome, sent = handle(settings, comment_event("/retrain", repo=REPO, installation_id=INSTALLATION_ID,
                                                   comment_id=3031, github=emu), "np-2")
    assert outcome.startswith("enqueued") and len(sent) == 1


def branch_button(emu: GitHubEmulator, branch: str, check_id: int = 9) -> dict:
    head = emu.head(REPO, branch)
    return {"action": "requested_action", "requested_action": {"identifier": "retrain"},
            "check_run": {"id": check_id, "head_sha": head, "external_id": external_id("ci", "a" * 32),
                          "check_suite": {"head_branch": branch, "head_sha": head}},
            "repository": {"full_name": REPO}, "installation": {"id": INSTALLATION_ID}, "sender": {"login": "alice"}}


def test_the_button_of_a_check_run_on_another_branch_trains_that_branch(github, settings) -> None:
    emu, _ = github
    emu.create_branch(REPO, "experiment")
    outcome, sent = handle(settings, branch_button(emu, "experiment"), "b-1", event="check_run")
    assert outcome.startswith("enqueued") and sent[0]["request"]["branch"] == "experiment"


def pull_button(emu: GitHubEmulator, number: int, head_branch: str, head: str) -> dict:
    """The button of a pull request's check run; a fork's suite names the fork's branch (here "main")."""
    return {"action": "rerequested",
            "check_run": {"id": 11, "head_sha": head, "external_id": external_id("ci", "b" * 32, number),
                          "check_suite": {"head_branch": head_branch, "head_sha": head}},
            "repository": {"full_name": REPO}, "installation": {"id": INSTALLATION_ID}, "sender": {"login": "alice"}}


def test_the_button_of_a_pull_requests_check_run_evaluates_the_pull_request_again(github, settings) -> None:
    emu, _ = github
    number = same_repo_pull(emu)
    head = emu.head(REPO, "more-text")
    outcome, sent = handle(settings, pull_button(emu, number, "more-text", head), "pb-1", event="check_run")
    assert outcome.startswith("enqueued"), outcome
    request = sent[0]["request"]
    assert (request["pull_number"], request["pull_head_sha"], request["branch"]) == (number, head, "main")


def test_the_button_of_a_forks_check_run_never_trains_a_branch_of_the_same_name(github, settings) -> None:
    """The fork's branch is called main: its button must neither train this repository's main from the fork's
    commit nor read the fork's config; without an approval of the head it is refused, on the pull request."""
    emu, _ = github
    config = yaml.safe_load(TINY_CONFIG)
    config["profiles"]["ci"]["max_iters"] = 1
    number = emu.open_fork_pull(REPO, "mallory", {".github/retrain.yml": yaml.safe_dump(config).encode()})
    head = emu.repos[REPO].git.resolve(f"refs/pull/{number}/head")
    outcome, sent = handle(settings, pull_button(emu, number, "main", head), "fb-1", event="check_run")
    assert outcome.startswith("refused: pull request") and sent == []
    assert "ok-to-test" in emu.comments(REPO, number)[-1]["body"]


# --- end to end -----------------------------------------------------------------------------------------------
@pytest.fixture
def services(tmp_path: Path, github, redis_url: str, clean_redis, app_key_pair) -> Iterator[str]:
    with retrain_services(tmp_path, github[1], redis_url, app_key_pair[0]) as running:
        yield running.web


def progress_commits(emu: GitHubEmulator, branch: str = "main") -> list[dict]:
    return [c for c in emu.git_log(REPO, branch) if c["message"].startswith("retrain(")]


def finished(emu: GitHubEmulator, head_sha: str) -> dict | None:
    done = [c for c in emu.check_runs(REPO) if c["head_sha"] == head_sha and c["status"] == "completed"]
    return done[0] if done else None


def test_pull_requests_end_to_end(github, services, tmp_path) -> None:
    """main trains once; a same-repository PR adding text is evaluated against main's best, main untouched;
    a fork's PR runs once approved; the button of a check run on another branch trains that branch."""
    emu, _ = github
    web, log = services, tmp_path / "worker.log"
    assert post(web, comment_event("/retrain", repo=REPO, installation_id=INSTALLATION_ID, comment_id=3100,
                                   github=emu), delivery="m-1") == 202
    wait_until(lambda: len(progress_commits(emu)) == 1, SESSION_TIMEOUT, "main's progress commit", log)
    main_head = emu.head(REPO)
    best = json.loads(emu.read_file(REPO, f"{RUN_DIR}/cache/metadata.json"))
    [base_best] = best

    number = same_repo_pull(emu)
    pr_head = emu.head(REPO, "more-text")
    assert post(web, pr_comment(emu, "/retrain", number, comment_id=3101), delivery="p-1") == 202
    check = wait_until(lambda: finished(emu, pr_head), SESSION_TIMEOUT, "the pull request's check run", log)
    assert check["conclusion"] == "success", check
    reply = wait_until(lambda: [c["body"] for c in emu.comments(REPO, number) if "not committed" in c["body"]],
                       30, "the pull request's report", log)[0]
    assert f"evaluates pull request #{number}" in reply and base_best in reply
    assert "validation bits per byte" in reply
    # the base branch and the pull request's branch are untouched
    assert emu.head(REPO) == main_head and emu.head(REPO, "more-text") == pr_head
    pull_folder = tmp_path / "store" / REPO / "nanecho-cached-ci" / "pulls" / str(number)
    [evaluated] = [p.name.removesuffix(".entry.json") for p in pull_folder.glob("*.entry.json")]

    fork_config = yaml.safe_load(TINY_CONFIG)  # the fork's own config would train 3 iterations and commit
    fork_config["profiles"]["ci"]["max_iters"] = 3
    fork_config["pull_requests"] = {"commit": True}
    fork_files = {**NEW_TEXT, ".github/retrain.yml": yaml.safe_dump(fork_config).encode()}
    fork = emu.open_fork_pull(REPO, "mallory", fork_files)
    fork_head = emu.repos[REPO].git.resolve(f"refs/pull/{fork}/head")
    assert post(web, pr_comment(emu, "/retrain", fork, comment_id=3102), delivery="f-1") == 202
    wait_until(lambda: any("ok-to-test" in c["body"] for c in emu.comments(REPO, fork)), 30, "the refusal", log)
    assert post(web, pr_comment(emu, "/retrain ok-to-test", fork, comment_id=3103), delivery="f-2") == 202
    check = wait_until(lambda: finished(emu, fork_head), SESSION_TIMEOUT, "the fork's check run", log)
    assert check["conclusion"] == "success" and emu.head(REPO) == main_head
    assert "trained 40 iterations (40 → 80)" in check["output"]["summary"]  # the base's ci profile, not the fork's
    assert f"not committed: this evaluates pull request #{fork}" in check["output"]["summary"]

    emu.create_branch(REPO, "experiment")
    assert post(web, branch_button(emu, "experiment"), delivery="b-1", event="check_run") == 202
    wait_until(lambda: progress_commits(emu, "experiment")[:1] != progress_commits(emu)[:1], SESSION_TIMEOUT,
               "the branch's progress commit", log)
    assert emu.head(REPO) == main_head  # main untouched

    # A push after the evaluation (taking text out), another evaluation of the new head, then the merge: main's
    # next session takes the checkpoint trained on the merged head, and leaves out the one trained on text
    # that was never merged.
    emu.commit_files(REPO, {"notes/pr/added.md": ("Other lines, as merged. " * 80).encode()}, branch="more-text")
    merged_head = emu.head(REPO, "more-text")
    assert post(web, pr_comment(emu, "/retrain", number, comment_id=3104), delivery="p-2") == 202
    wait_until(lambda: finished(emu, merged_head), SESSION_TIMEOUT, "the second evaluation", log)
    [final] = [p.name.removesuffix(".entry.json") for p in pull_folder.glob("*.entry.json")
               if p.name.removesuffix(".entry.json") != evaluated]
    emu.merge_pull(REPO, number)
    assert post(web, comment_event("/retrain", repo=REPO, installation_id=INSTALLATION_ID, comment_id=3105,
                                   github=emu), delivery="m-2") == 202
    wait_until(lambda: emu.git_log(REPO)[0]["message"].startswith("retrain("), SESSION_TIMEOUT,
               "main's next progress commit", log)
    after_merge = json.loads(emu.read_file(REPO, f"{RUN_DIR}/training_summary.json"))["session"]
    registry = set(json.loads(emu.read_file(REPO, f"{RUN_DIR}/cache/metadata.json")))
    assert final in registry and evaluated not in registry, after_merge
    notes = " ".join(after_merge["notes"])
    assert f"took {final}, trained on merged pull request #{number}" in notes
    assert f"left out {evaluated} of merged pull request #{number}" in notes
    assert after_merge["resumed_from"] == final  # measured on today's text (the merged one); main's was not
    assert not list(pull_folder.glob("*.entry.json"))  # the records are gone once a commit took what it could
