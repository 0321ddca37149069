"""The events task against the emulator: what a comment leads to, and the exact message handed to the
train queue (the contract between the events and train workers)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from app.config.settings import Settings
from tests.conftest import INSTALLATION_ID, REPO
from tests.emulator import GitHubEmulator
from tests.payloads import comment_event
from workers.coordination.live import LiveSession, LiveSessions
from workers.jobs.events import handle_event, session_id_for


def handle(
    github: tuple[GitHubEmulator, str], settings: Settings, body: str, *, sender: str = "alice", comment_id: int = 77,
    live: LiveSessions | None = None,
) -> tuple[str, list]:
    sent: list[dict[str, Any]] = []
    payload = comment_event(body, sender=sender, repo=REPO, installation_id=INSTALLATION_ID, comment_id=comment_id,
                            github=github[0])
    outcome = asyncio.run(handle_event(settings, "issue_comment", "delivery-9", payload, sent.append, live=live))
    return outcome, sent


def test_a_permitted_command_reacts_and_enqueues_exactly_this_message(github, settings) -> None:
    emu, _ = github
    outcome, sent = handle(github, settings, "/retrain ci max_iters=12")
    [check] = emu.check_runs(REPO)
    assert sent == [
        {
            "origin": {"repo": REPO, "installation_id": INSTALLATION_ID, "trigger": "issue_comment",
                       "sender": "alice", "delivery_id": "delivery-9", "issue_number": 7, "comment_id": 77,
                       "line": "/retrain ci max_iters=12", "ref": None, "head_sha": None, "pull_number": None,
                       "workflow": None,
                       "event_key": f"issue_comment:{REPO}:77", "signed_at": sent[0]["origin"]["signed_at"]},
            "request": {"session_id": session_id_for(f"issue_comment:{REPO}:77"), "profile": "ci", "max_iters": 12,
                        "trigger": "issue_comment", "sender": "alice", "delivery_id": "delivery-9",
                        "fresh": False, "max_checkpoints": None, "branch": None},
            "check_run_id": check["id"],
            "check_url": check["html_url"],
            "run": "nanecho-cached-ci",
            "time_limit_s": 3600.0,
        }
    ]
    assert outcome.startswith("enqueued session")
    assert emu.reactions(REPO, 77) == ["eyes"]
    assert (check["status"], check["name"], check["external_id"], check["head_sha"]) == (
        "queued", "Retrain (ci)", f"retrain:ci:{session_id_for(f'issue_comment:{REPO}:77')}", emu.head(REPO),
    )
    [reply] = emu.comments(REPO, 7)
    assert "queued" in reply["body"] and check["html_url"] in reply["body"]


@pytest.mark.parametrize(
    ("body", "sender", "reply_part"),
    [
        ("/retrain ci", "bob", "you have `read` permission"),  # and a 👎
        ("/retrain ci", "mallory", "you have `none` permission"),
        ("/retrain huge", "alice", "unknown profile `huge`; valid profiles: ci, full, scheduled"),
        ("/retrain ci colour=blue", "alice", "unknown argument `colour=blue`"),
    ],
)
def test_refused_or_malformed_commands_get_a_reply_and_start_nothing(github, settings, body, sender, reply_part):
    emu, _ = github
    _, sent = handle(github, settings, body, sender=sender)
    assert sent == []
    [reply] = emu.comments(REPO, 7)
    assert reply["body"].startswith("<!-- retrain -->\n> " + body)
    assert f"@{sender}" in reply["body"] and reply_part in reply["body"]
    assert "eyes" not in emu.reactions(REPO, 77)
    assert emu.check_runs(REPO) == []


def test_an_invalid_repository_config_is_reported_to_the_requester(github, settings) -> None:
    emu, _ = github
    emu.commit_files(REPO, {".github/retrain.yml": b"retention: {max_checkpoints: 0}\n"})
    _, sent = handle(github, settings, "/retrain")
    assert sent == []
    [reply] = emu.comments(REPO, 7)
    assert "retention.max_checkpoints" in reply["body"]


def test_comments_without_a_command_make_no_api_calls(github, settings) -> None:
    emu, _ = github
    outcome, sent = handle(github, settings, "thanks!")
    assert outcome.startswith("ignored") and sent == [] and emu.calls == []


def test_refusal_gets_a_thumbs_down_and_help_lists_the_profiles(github, settings) -> None:
    emu, _ = github
    handle(github, settings, "/retrain ci", sender="bob", comment_id=78)
    assert emu.reactions(REPO, 78) == ["-1"]
    _, sent = handle(github, settings, "/retrain help", comment_id=79)
    assert sent == []
    help_reply = emu.comments(REPO, 7)[-1]["body"]
    assert "/retrain [profile]" in help_reply and "`ci`" in help_reply and "`scheduled`" in help_reply


def list_workflow(emu, path: str) -> None:
    """Add `path` to the repository config's `workflows`."""
    config = emu.read_file(REPO, ".github/retrain.yml") + f"workflows: [{path}]\n".encode()
    emu.commit_files(REPO, {".github/retrain.yml": config})


def dispatch_payload(workflow: str, **inputs: str) -> dict:
    return {"inputs": inputs, "ref": "refs/heads/main", "workflow": workflow, "repository": {"full_name": REPO},
            "installation": {"id": INSTALLATION_ID}, "sender": {"login": "alice"}}


def test_dispatch_of_a_listed_workflow_starts_a_session_and_others_are_ignored(github, settings) -> None:
    emu, _ = github
    listed = ".github/workflows/netrain-cached.yml"
    list_workflow(emu, listed)
    sent: list = []
    outcome = asyncio.run(handle_event(settings, "workflow_dispatch", "dd-1",
                                       dispatch_payload(listed, training_type="ci", max_iters="9"), sent.append))
    assert outcome.startswith("enqueued") and sent[0]["request"]["max_iters"] == 9
    assert sent[0]["origin"]["workflow"] == listed and sent[0]["request"]["branch"] == "main"
    outcome = asyncio.run(handle_event(settings, "workflow_dispatch", "dd-2",
                                       dispatch_payload(".github/workflows/other.yml"), sent.append))
    assert outcome.startswith("ignored") and len(sent) == 1


def test_an_unconfirmed_fresh_dispatch_fails_its_check_run_and_starts_nothing(github, settings) -> None:
    emu, _ = github
    sent: list = []
    payload = dispatch_payload(".github/workflows/x.yml", force_fresh_start="true")
    asyncio.run(handle_event(settings, "workflow_dispatch", "dd-3", payload, sent.append))
    assert sent == []
    [check] = emu.check_runs(REPO)
    assert (check["status"], check["conclusion"]) == ("completed", "failure")
    assert "I CONFIRM FRESH START" in check["output"]["summary"]


def test_status_lists_live_sessions_and_cancel_asks_them_to_stop(github, settings, clean_redis) -> None:
    emu, _ = github
    live = LiveSessions(clean_redis)
    handle(github, settings, "/retrain status", live=live, comment_id=81)
    assert "no session of this repository is queued or running" in emu.comments(REPO, 7)[-1]["body"]

    live.put(REPO, LiveSession("abcdef1234", "ci", "running", "issue_comment", "alice", iteration=50,
                               session_iteration=10, max_iters=40, loss=1.2345, eta_s=12))
    live.put(REPO, LiveSession("bbbbbbbb99", "full", "queued", "workflow_dispatch"))
    handle(github, settings, "/retrain status", live=live, comment_id=82)
    status = emu.comments(REPO, 7)[-1]["body"]
    assert "`abcdef12` | `ci` | running | 50 (10/40) | 1.2345 | 12 s | @alice" in status
    assert "`bbbbbbbb` | `full` | queued" in status

    handle(github, settings, "/retrain cancel", sender="bob", live=live, comment_id=83)  # read permission: refused
    assert not live.cancel_requested("abcdef1234") and emu.reactions(REPO, 83) == ["-1"]
    handle(github, settings, "/retrain cancel", live=live, comment_id=84)
    assert live.cancel_requested("abcdef1234") and live.cancel_requested("bbbbbbbb99")
    assert "asked 2 session(s) to stop" in emu.comments(REPO, 7)[-1]["body"]


def test_a_confirmed_fresh_dispatch_starts_a_fresh_session(github, settings) -> None:
    emu, _ = github
    listed = ".github/workflows/netrain-cached.yml"
    list_workflow(emu, listed)
    sent: list = []
    payload = dispatch_payload(listed, force_fresh_start="true", confirm_fresh_start="I CONFIRM FRESH START",
                               max_checkpoints="3")
    assert asyncio.run(handle_event(settings, "workflow_dispatch", "dd-4", payload, sent.append)).startswith("enqueued")
    assert (sent[0]["request"]["fresh"], sent[0]["request"]["max_checkpoints"]) == (True, 3)


def test_a_scheduled_workflow_run_of_a_listed_workflow_starts_a_scheduled_session(github, settings) -> None:
    emu, _ = github
    nightly = ".github/workflows/nightly.yml"
    list_workflow(emu, nightly)
    head = emu.head(REPO)
    run = {"id": 30433642, "run_attempt": 1,
           "event": "schedule", "path": nightly, "head_sha": head, "head_branch": "main"}
    payload = {"action": "requested", "workflow_run": run, "repository": {"full_name": REPO},
               "installation": {"id": INSTALLATION_ID}, "sender": {"login": "octo"}}
    sent: list = []
    assert asyncio.run(handle_event(settings, "workflow_run", "wr-1", payload, sent.append)).startswith("enqueued")
    assert sent[0]["request"]["profile"] == "scheduled" and sent[0]["origin"]["trigger"] == "workflow_run"
    assert [c for c in emu.calls if "/permission" in c.path] == []  # the repository's own schedule
    [check] = emu.check_runs(REPO)
    assert (check["head_sha"], check["name"]) == (head, "Retrain (scheduled)")


def test_the_retrain_button_on_a_check_run_starts_another_session(github, settings) -> None:
    emu, _ = github
    head = emu.head(REPO)
    payload = {"action": "requested_action", "requested_action": {"identifier": "retrain"},
               "check_run": {"id": 1, "head_sha": head, "external_id": "retrain:ci"},
               "repository": {"full_name": REPO}, "installation": {"id": INSTALLATION_ID}, "sender": {"login": "alice"}}
    sent: list = []
    assert asyncio.run(handle_event(settings, "check_run", "cr-1", payload, sent.append)).startswith("enqueued")
    assert sent[0]["request"]["profile"] == "ci" and sent[0]["origin"]["head_sha"] == head
    bob = {**payload, "sender": {"login": "bob"}}
    assert asyncio.run(handle_event(settings, "check_run", "cr-2", bob, sent.append)).startswith("refused")
    assert len(sent) == 1


def test_any_command_replayed_under_a_new_delivery_id_does_nothing(github, settings) -> None:
    """A captured `/retrain cancel` posted again later must not cancel the sessions running then."""
    emu, _ = github
    live = LiveSessions(redis.Redis.from_url(settings.redis_url))
    payload = comment_event("/retrain cancel", sender="alice", repo=REPO, installation_id=INSTALLATION_ID,
                            comment_id=88, github=emu)
    first = asyncio.run(handle_event(settings, "issue_comment", "d-first", payload, lambda m: None, live=live))
    assert first.startswith("cancel requested")
    again = asyncio.run(handle_event(settings, "issue_comment", "d-first", payload, lambda m: None, live=live))
    assert again.startswith("cancel requested")  # the same delivery again (a retried task) is carried out
    replay = asyncio.run(handle_event(settings, "issue_comment", "d-replayed", payload, lambda m: None, live=live))
    assert replay == "ignored: this event was handled under delivery d-first; a replay does nothing"
    assert len(emu.comments(REPO, 7)) == 2


def test_an_event_signed_longer_ago_than_deliveries_are_remembered_is_ignored(github, settings) -> None:
    """Past RETRAIN_DELIVERY_TTL_S the claim of its first delivery is gone; the signed timestamp is not."""
    emu, _ = github
    payload = comment_event("/retrain help", sender="alice", repo=REPO, installation_id=INSTALLATION_ID,
                            comment_id=89, github=emu)
    payload["comment"]["created_at"] = "2020-01-01T00:00:00Z"
    outcome = asyncio.run(handle_event(settings, "issue_comment", "d-old", payload, lambda m: None))
    assert outcome.startswith("ignored: the event was signed") and "RETRAIN_DELIVERY_TTL_S" in outcome
    assert emu.comments(REPO, 7) == []


def test_a_crash_after_the_session_was_queued_keeps_the_event_claimed(github, settings) -> None:
    """The session is queued, then the "queued" reply fails and the task raises: a replay under a new
    delivery id must still do nothing (a crash before anything was done lets a redelivery try again)."""
    emu, _ = github
    emu.inject_fault("POST", r"/repos/octo/demo/issues/7/comments", 500, times=30)
    payload = comment_event("/retrain ci", sender="alice", repo=REPO, installation_id=INSTALLATION_ID, comment_id=90,
                            github=emu)
    sent: list = []
    with pytest.raises(Exception):  # noqa: B017 - whatever the client raises for a 500 it gave up retrying
        asyncio.run(handle_event(settings, "issue_comment", "d-crashed", payload, sent.append))
    assert len(sent) == 1
    emu.clear_faults()
    replay = asyncio.run(handle_event(settings, "issue_comment", "d-replay", payload, sent.append))
    assert replay.startswith("ignored: this event was handled under delivery d-crashed") and len(sent) == 1

    emu.inject_fault("GET", r"/repos/octo/demo/contents/.*", 500, times=30)  # before anything was done
    other = comment_event("/retrain ci", sender="alice", repo=REPO, installation_id=INSTALLATION_ID, comment_id=91,
                            github=emu)
    with pytest.raises(Exception):  # noqa: B017
        asyncio.run(handle_event(settings, "issue_comment", "d-early", other, sent.append))
    emu.clear_faults()
    again = asyncio.run(handle_event(settings, "issue_comment", "d-early-redelivered", other, sent.append))
    assert again.startswith("enqueued") and len(sent) == 2


@pytest.mark.parametrize(("needed", "role", "allowed"), [
    ("maintain", "maintain", True), ("maintain", "write", False), ("triage", "triage", True),
    ("triage", "read", False), ("write", "maintain", True),
])
def test_the_permission_asked_for_is_the_role_github_names(github, settings, needed: str, role: str,
                                                           allowed: bool) -> None:
    """The legacy `permission` field folds maintain into write and triage into read; `role_name` does not."""
    emu, _ = github
    config = emu.read_file(REPO, ".github/retrain.yml") + f"permission: {needed}\n".encode()
    emu.commit_files(REPO, {".github/retrain.yml": config}, message=f"permission {needed}")
    emu.set_permission(REPO, "carol", role)
    outcome, sent = handle(github, settings, "/retrain ci", sender="carol")
    assert outcome.startswith("enqueued" if allowed else "refused"), outcome
    assert len(sent) == int(allowed)
    if not allowed:
        assert f"you have `{role}` permission" in emu.comments(REPO, 7)[0]["body"]


def test_a_dispatch_on_a_tag_is_refused_on_the_default_branch(github, settings) -> None:
    emu, _ = github
    listed = ".github/workflows/netrain-cached.yml"
    list_workflow(emu, listed)
    sent: list = []
    payload = {**dispatch_payload(listed, training_type="ci"), "ref": "refs/tags/v1.0"}
    outcome = asyncio.run(handle_event(settings, "workflow_dispatch", "dd-tag", payload, sent.append))
    assert outcome == "rejected: malformed command" and sent == []
    [check] = emu.check_runs(REPO)
    assert (check["conclusion"], check["head_sha"]) == ("failure", emu.head(REPO))
    assert "run on the tag `v1.0`" in check["output"]["summary"]


def test_an_event_carried_out_again_after_a_late_failure_opens_one_check_run(github, settings) -> None:
    """The check run was created, then Redis failed on the way to the queue: nothing was enqueued, so the
    events task carries the event out again, and finds the session's check run instead of opening a
    second one that would stay queued for ever."""
    emu, _ = github
    payload = comment_event("/retrain ci", sender="alice", repo=REPO, installation_id=INSTALLATION_ID,
                            comment_id=78, github=emu)
    sent: list[dict[str, Any]] = []

    def enqueue_once_redis_is_back(message: dict[str, Any]) -> None:
        if not sent and not getattr(enqueue_once_redis_is_back, "failed", False):
            enqueue_once_redis_is_back.failed = True  # type: ignore[attr-defined]
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        sent.append(message)

    with pytest.raises(redis.ConnectionError):
        asyncio.run(handle_event(settings, "issue_comment", "delivery-10", payload, enqueue_once_redis_is_back))
    emu.commit_files(REPO, {"notes/later.md": b"pushed between the two goes"})  # the branch moves meanwhile
    outcome = asyncio.run(handle_event(settings, "issue_comment", "delivery-10", payload, enqueue_once_redis_is_back))
    assert outcome.startswith("enqueued session")
    [check] = emu.check_runs(REPO)
    assert sent[0]["check_run_id"] == check["id"]
    assert sum("is queued" in c["body"] for c in emu.comments(REPO, 7)) == 1


def test_a_command_whose_comment_was_deleted_meanwhile_is_withdrawn(github, settings) -> None:
    emu, _ = github
    payload = comment_event("/retrain ci", sender="alice", repo=REPO, installation_id=INSTALLATION_ID,
                            comment_id=79, github=emu)
    emu.event_happened("issue_comment", {**payload, "action": "deleted"})  # deleted before the task ran
    sent: list[dict[str, Any]] = []
    outcome = asyncio.run(handle_event(settings, "issue_comment", "delivery-11", payload, sent.append))
    assert outcome == "ignored: the comment was deleted before its command was carried out"
    assert sent == [] and emu.check_runs(REPO) == [] and emu.comments(REPO, 7) == []


def test_a_comment_deleted_between_two_goes_closes_the_check_run_the_first_opened(github, settings) -> None:
    emu, _ = github
    payload = comment_event("/retrain ci", sender="alice", repo=REPO, installation_id=INSTALLATION_ID,
                            comment_id=80, github=emu)

    def redis_down(message: dict[str, Any]) -> None:
        raise redis.ConnectionError("Connection refused.")

    with pytest.raises(redis.ConnectionError):
        asyncio.run(handle_event(settings, "issue_comment", "delivery-12", payload, redis_down))
    emu.event_happened("issue_comment", {**payload, "action": "deleted"})
    outcome = asyncio.run(handle_event(settings, "issue_comment", "delivery-12", payload, redis_down))
    assert outcome == "ignored: the comment was deleted before its command was carried out"
    [check] = emu.check_runs(REPO)
    assert (check["status"], check["conclusion"], check["output"]["title"]) == ("completed", "cancelled", "Withdrawn")
