"""Schedules: the planners for `installation`, `installation_repositories` and `push` (pure); the events
task keeping redbeat entries in Redis (db 13) against the emulator; the fired task; and a real `celery beat`
process firing a due entry into a real events worker, which enqueues a session on the train queue."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery.schedules import schedule
from redbeat.schedulers import RedBeatSchedulerEntry

from app.config.settings import Settings
from app.features import plan
from app.features.decisions import Ignore, RemoveSchedules, SyncSchedules
from app.queues import SESSION_TASK, TRAIN_QUEUE
from tests.conftest import APP_ID, INSTALLATION_ID, REPO, fixtures_dir
from tests.processes import celery_worker, process, wait_until
from tests.repos import TINY_CONFIG
from workers.celery_app import REDELIVER_EVERY, create_celery
from workers.jobs.events import handle_event
from workers.jobs.schedules import ScheduleSpec, ScheduleStore, build_entry, entry_name

CONFIG = ".github/retrain.yml"
TWO_ENTRIES = TINY_CONFIG + 'schedule:\n  - {cron: "0 */6 * * *", profile: ci}\n  - {cron: "30 2 * * 1"}\n'
REDELIVER_ENTRY = "redeliver-failed-deliveries"
TWO_CRONS = {entry_name(REPO, 0): ("0 */6 * * *", "ci"), entry_name(REPO, 1): ("30 2 * * 1", "scheduled")}


# -- payloads: GitHub's real examples with our values when RETRAIN_FIXTURES is set, else the same shape here ---
def example(event: str, name: str) -> dict[str, Any] | None:
    root = fixtures_dir()
    return json.loads((root / f"github/webhook-examples/{event}/{name}.payload.json").read_text()) if root else None


def real_example(event: str, name: str) -> dict[str, Any]:
    payload = example(event, name)
    if payload is None:
        pytest.skip(f"RETRAIN_FIXTURES is not set: GitHub's real `{event}` example `{name}` is not checked")
    return payload


def repo_json(full_name: str) -> dict[str, Any]:
    return {"id": 1, "name": full_name.split("/")[1], "full_name": full_name, "private": False}


def ours(payload: dict[str, Any] | None, action: str) -> dict[str, Any]:
    payload = copy.deepcopy(payload or {"installation": {"id": 0}, "sender": {"login": "octo"}})
    payload["installation"]["id"] = INSTALLATION_ID
    return {**payload, "action": action}


def installation_event(action: str, repos: list[str]) -> dict[str, Any]:
    return {**ours(example("installation", "created"), action), "repositories": [repo_json(r) for r in repos]}


def repositories_event(action: str, repos: list[str]) -> dict[str, Any]:
    listed = [repo_json(r) for r in repos]
    return {**ours(example("installation_repositories", action), action),
            "repositories_added": listed if action == "added" else [],
            "repositories_removed": listed if action == "removed" else []}


def push_event(*, ref: str = "refs/heads/main", before: str = "a" * 40, after: str = "b" * 40,
               commits: list[dict[str, list[str]]] | None = None, **fields: Any) -> dict[str, Any]:
    payload = copy.deepcopy(example("push", "with-new-branch") or {"commits": [{"id": "c"}], "repository": {}})
    template = payload["commits"][0]
    files = commits if commits is not None else [{"modified": [CONFIG]}]
    payload.update({"ref": ref, "before": before, "after": after, "created": False, "deleted": False, "forced": False,
                    **fields})
    payload["commits"] = [{**template, "added": [], "removed": [], "modified": [], **f} for f in files]
    payload["repository"].update(full_name=REPO, name="demo", default_branch="main")
    payload["installation"] = {"id": INSTALLATION_ID}
    return payload


# -- planners ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (push_event(), SyncSchedules(INSTALLATION_ID, (REPO,))),
        (push_event(commits=[{"added": ["x.md"]}, {"removed": [CONFIG]}]), SyncSchedules(INSTALLATION_ID, (REPO,))),
        (push_event(commits=[{"modified": ["README.md"]}]), Ignore),
        (push_event(ref="refs/heads/feature"), Ignore),
        (push_event(ref="refs/tags/v1"), Ignore),
        (push_event(deleted=True), Ignore),
        (push_event(commits=[{"modified": ["README.md"]}] * 2048), SyncSchedules(INSTALLATION_ID, (REPO,))),
        (push_event(commits=[{"modified": [f"f{i}" for i in range(3000)]}]), SyncSchedules(INSTALLATION_ID, (REPO,))),
        (push_event(commits=[{"modified": ["README.md"]}], forced=True), SyncSchedules(INSTALLATION_ID, (REPO,))),
        (push_event(commits=[], before="0" * 40), SyncSchedules(INSTALLATION_ID, (REPO,))),
        ({**push_event(), "installation": None}, Ignore),
        (installation_event("created", [REPO, "octo/b"]), SyncSchedules(INSTALLATION_ID, ("octo/b", REPO))),
        (installation_event("new_permissions_accepted", [REPO]), SyncSchedules(INSTALLATION_ID, (REPO,))),
        (installation_event("deleted", [REPO]), RemoveSchedules(INSTALLATION_ID, (REPO,), whole_installation=True)),
        (installation_event("suspend", [REPO]), Ignore),
        (repositories_event("added", [REPO]), SyncSchedules(INSTALLATION_ID, (REPO,))),
        (repositories_event("removed", [REPO]), RemoveSchedules(INSTALLATION_ID, (REPO,))),
    ],
    ids=["config-modified", "config-removed", "other-file", "other-branch", "tag", "branch-deleted",
         "commit-list-capped", "file-list-capped", "forced", "created", "no-installation", "installed",
         "permissions", "uninstalled", "suspended", "repos-added", "repos-removed"],
)
def test_planner_decisions(payload: dict[str, Any], expected: Any) -> None:
    event = "push" if "ref" in payload else "installation"
    event += "_repositories" if "repositories_added" in payload else ""
    decision = plan(event, "d", payload)
    assert isinstance(decision, Ignore) if expected is Ignore else decision == expected


def test_githubs_own_examples_plan_as_expected() -> None:
    created = real_example("installation", "created")
    assert plan("installation", "d", created) == SyncSchedules(957387, ("Codertocat/Hello-World",))
    assert plan("installation", "d", real_example("installation", "deleted")) == RemoveSchedules(
        2, ("octocat/Hello-World",), whole_installation=True)
    assert isinstance(plan("installation", "d", real_example("installation", "unsuspend")), Ignore)
    assert plan("installation_repositories", "d", real_example("installation_repositories", "added")) == SyncSchedules(
        957387, ("Codertocat/Space",))
    assert plan("installation_repositories", "d", real_example("installation_repositories", "removed")) == (
        RemoveSchedules(2, ("octocat/Hello-World",)))
    assert isinstance(plan("push", "d", real_example("push", "with-installation")), Ignore)  # a tag
    # A new default branch: its commit list cannot say what the branch's config was before.
    assert plan("push", "d", real_example("push", "with-new-branch")) == SyncSchedules(1, ("Codertocat/Hello-World",))


# -- the events task against the emulator ------------------------------------------------------------------------
@pytest.fixture
def settings(settings: Settings, clean_redis) -> Settings:
    """The shared settings, on a flushed Redis database."""
    return settings


def handle(settings: Settings, event: str, payload: dict[str, Any]) -> str:
    sent: list[dict[str, Any]] = []
    outcome = asyncio.run(handle_event(settings, event, "d-1", payload, sent.append))
    assert sent == [], "schedule events never start a session themselves"
    return outcome


def crons(store: ScheduleStore) -> dict[str, tuple[str, str]]:
    return {name: (e.kwargs["cron"], e.kwargs["profile"]) for name, e in store.entries(REPO).items()}


def test_install_creates_entries_and_uninstall_removes_them(github, settings, clean_redis) -> None:
    emu, _ = github
    emu.commit_files(REPO, {CONFIG: TWO_ENTRIES.encode()})
    store = ScheduleStore.for_url(settings.redis_url)
    handle(settings, "installation", installation_event("created", [REPO]))
    assert crons(store) == TWO_CRONS
    assert clean_redis.exists("retrain:schedule:octo/demo:0", "retrain:schedule:octo/demo:1") == 2
    entry = store.entries(REPO)[entry_name(REPO, 0)]
    assert entry.kwargs == {"installation_id": INSTALLATION_ID, "repo": REPO, "profile": "ci", "cron": "0 */6 * * *"}
    assert entry.due_at > datetime.now(UTC), "a new entry waits for its next slot"

    calls = len(emu.calls)
    handle(settings, "installation", installation_event("deleted", []))  # found through the installation's index
    assert store.entries(REPO) == {} and clean_redis.keys("retrain:schedule*") == []
    assert clean_redis.zcard("retrain::schedule") == 0
    assert len(emu.calls) == calls, "an uninstalled App has no token: removing asks GitHub nothing"


def test_a_push_that_changes_the_config_refreshes_entries(github, settings) -> None:
    emu, _ = github
    store = ScheduleStore.for_url(settings.redis_url)
    emu.commit_files(REPO, {CONFIG: TWO_ENTRIES.encode()})
    handle(settings, "installation_repositories", repositories_event("added", [REPO]))
    kept_last_run = store.entries(REPO)[entry_name(REPO, 1)].last_run_at

    emu.commit_files(REPO, {CONFIG: TWO_ENTRIES.replace("0 */6 * * *", "15 4 * * *").encode()})
    handle(settings, "push", push_event(ref="refs/heads/feature"))  # not the default branch: nothing changes
    assert crons(store)[entry_name(REPO, 0)] == ("0 */6 * * *", "ci")
    handle(settings, "push", push_event())
    assert crons(store) == {entry_name(REPO, 0): ("15 4 * * *", "ci"), entry_name(REPO, 1): ("30 2 * * 1", "scheduled")}
    assert store.entries(REPO)[entry_name(REPO, 1)].last_run_at == kept_last_run, "an unchanged entry is untouched"

    emu.commit_files(REPO, {CONFIG: TINY_CONFIG.encode() + b'schedule: [{cron: "5 5 * * *", profile: ci}]\n'})
    handle(settings, "push", push_event())
    assert crons(store) == {entry_name(REPO, 0): ("5 5 * * *", "ci")}

    emu.commit_files(REPO, {CONFIG: None})
    handle(settings, "push", push_event(commits=[{"removed": [CONFIG]}]))
    assert store.entries(REPO) == {} and store.repos(INSTALLATION_ID) == set()


def test_an_invalid_schedule_keeps_the_last_valid_entries_and_fails_a_check_run(github, settings) -> None:
    emu, _ = github
    store = ScheduleStore.for_url(settings.redis_url)
    emu.commit_files(REPO, {CONFIG: TWO_ENTRIES.encode()})
    handle(settings, "installation", installation_event("created", [REPO]))
    before = crons(store)
    emu.commit_files(REPO, {CONFIG: TWO_ENTRIES.replace("30 2 * * 1", "61 * * * *").encode()})
    assert "invalid config, kept 2 entries" in handle(settings, "push", push_event())
    assert crons(store) == before
    [check] = emu.check_runs(REPO)
    assert (check["status"], check["conclusion"], check["head_sha"]) == ("completed", "failure", emu.head(REPO))
    assert "schedule.1.cron" in check["output"]["summary"] and "keep running" in check["output"]["summary"]

    emu.commit_files(REPO, {CONFIG: TWO_ENTRIES.replace("profile: ci", "profile: huge").encode()})
    handle(settings, "push", push_event())
    assert crons(store) == before
    assert "schedule.0.profile: unknown profile `huge`" in emu.check_runs(REPO)[-1]["output"]["summary"]

    handle(settings, "installation_repositories", repositories_event("removed", [REPO]))
    assert store.entries(REPO) == {}


# -- the fired task ------------------------------------------------------------------------------------------------
def test_a_fired_entry_queues_a_check_run_and_enqueues_the_session(github, settings) -> None:
    from workers.tasks import run_scheduled_session  # the training stack, only for this test

    emu, _ = github
    emu.commit_files(REPO, {CONFIG: TWO_ENTRIES.encode()})
    store = ScheduleStore.for_url(settings.redis_url)
    sent: list[dict[str, Any]] = []
    outcome = asyncio.run(run_scheduled_session(settings, INSTALLATION_ID, REPO, "ci", "0 */6 * * *",
                                                firing="schedule-t1", enqueue=sent.append, store=store))
    assert outcome.startswith("enqueued session")
    [check] = emu.check_runs(REPO)
    assert (check["status"], check["name"], check["head_sha"]) == ("queued", "Retrain (ci)", emu.head(REPO))
    [message] = sent
    assert message["origin"]["trigger"] == "schedule" and message["origin"]["sender"] is None
    assert message["request"]["profile"] == "ci" and message["check_run_id"] == check["id"]
    assert not any("/collaborators/" in c.path for c in emu.calls), "no person to check for a schedule"

    # An entry the config no longer has (its push was lost): nothing runs, and the entries catch up.
    outcome = asyncio.run(run_scheduled_session(settings, INSTALLATION_ID, REPO, "ci", "1 1 * * *",
                                                firing="schedule-t2", enqueue=sent.append, store=store))
    assert outcome.startswith("ignored") and len(sent) == 1
    assert crons(store) == TWO_CRONS


# -- a real beat process -----------------------------------------------------------------------------------------
def kombu_task(raw: bytes) -> tuple[str, dict[str, Any]]:
    """The task name and kwargs of a message as kombu's Redis transport keeps it in a queue's list."""
    message = json.loads(raw)
    _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    return message["headers"]["task"], kwargs


@pytest.mark.e2e
def test_real_beat_fires_a_due_entry_into_a_session_on_the_train_queue(github, settings, clean_redis, tmp_path) -> None:
    emu, base_url = github
    emu.commit_files(REPO, {CONFIG: TINY_CONFIG.encode() + b'schedule: [{cron: "* * * * *", profile: ci}]\n'})
    lost = emu.add_hook_delivery(guid="lost-1", event="issue_comment", action="created", status_code=502)
    store = ScheduleStore.for_url(settings.redis_url)
    # Due now: it last ran over a minute ago, so beat need not wait for the next minute.
    a_minute_ago = datetime.now(UTC) - timedelta(seconds=61)
    build_entry(store.app, INSTALLATION_ID, REPO, ScheduleSpec(entry_name(REPO, 0), "* * * * *", "ci"),
                last_run_at=a_minute_ago).save()
    # The static redelivery entry, as beat would keep it after running 5 minutes ago: beat keeps the
    # stored last run of a static entry, so it is due at once too.
    static = create_celery(settings).conf.beat_schedule[REDELIVER_ENTRY]
    RedBeatSchedulerEntry(REDELIVER_ENTRY, static["task"], schedule(static["schedule"]), options=static["options"],
                          app=store.app, last_run_at=a_minute_ago - REDELIVER_EVERY).save()
    env = {"RETRAIN_APP_ID": APP_ID, "RETRAIN_PRIVATE_KEY_PATH": str(settings.private_key_path),
           "REDIS_URL": settings.redis_url, "RETRAIN_REDIS_URL": settings.redis_url,
           "RETRAIN_GITHUB_API_URL": base_url, "PYTHONUNBUFFERED": "1"}
    beat = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat", "-S", "redbeat.RedBeatScheduler",
            "--loglevel", "INFO", "--max-interval", "1"]
    events_log, beat_log = tmp_path / "events.log", tmp_path / "beat.log"
    with celery_worker(env, events_log, queues="events"), process(beat, env, beat_log):
        raw = wait_until(lambda: clean_redis.lindex(TRAIN_QUEUE, -1), 30, "a session on the train queue", beat_log)
        # The redelivery job ran in the same events worker.
        wait_until(lambda: emu.redelivery_requests == [lost], 15, "the failed delivery redelivered", events_log)
    task, kwargs = kombu_task(raw)  # the first; a minute boundary during the test may have added another
    check = next(c for c in emu.check_runs(REPO) if c["id"] == kwargs["check_run_id"])
    assert task == SESSION_TASK
    assert (kwargs["origin"]["repo"], kwargs["origin"]["trigger"], kwargs["request"]["profile"]) == (
        REPO, "schedule", "ci")
    assert (check["status"], check["name"], check["head_sha"]) == ("queued", "Retrain (ci)", emu.head(REPO))
    assert "Sending due task schedule:octo/demo:0 (retrain.scheduled_session)" in beat_log.read_text()
    fired = RedBeatSchedulerEntry.from_key(store.key(entry_name(REPO, 0)), app=store.app)
    assert fired.total_run_count >= 1 and fired.due_at > datetime.now(UTC) - timedelta(seconds=5)


def test_one_repository_failing_on_graphql_spoils_no_other_repositorys_schedule(github, settings) -> None:
    emu, _ = github
    emu.add_repository("octo/broken", files={CONFIG: b"schedule: [{cron: '99 * * * *'}]\n"}, default_branch="main",
                       installation_id=INSTALLATION_ID)
    emu.commit_files(REPO, {CONFIG: TWO_ENTRIES.encode()})
    refused = {"type": "FORBIDDEN", "path": ["repository"], "message": "Resource not accessible by integration"}
    emu.inject_fault("POST", "/graphql", 200, body={"data": None, "errors": [refused]}, body_contains="broken",
                     times=20)  # a GraphQL error (HTTP 200) where its invalid config's report reads the head
    outcome = handle(settings, "installation", installation_event("created", ["octo/broken", REPO]))
    assert "octo/broken: not updated" in outcome, outcome
    assert crons(ScheduleStore.for_url(settings.redis_url)) == TWO_CRONS
