"""The fault-injection suite: real Redis, real Celery worker processes, the receiver over HTTP and the GitHub
emulator, with one fault injected per test. Each test reports a one-line summary of the fault and its outcome
(printed at the end of the run, see conftest.fault_report).

Leases are short here (RETRAIN_LOCK_TTL_S=2) so that a killed session's run frees up within seconds.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.github.retry import MAX_ATTEMPTS
from tests.conftest import REPO
from tests.emulator import GitHubEmulator
from tests.payloads import comment_event
from tests.processes import free_port, pool_children, redis_server, wait_until
from tests.repos import set_ci_profile
from tests.services import Services, post, retrain_services
from workers.coordination.live import LiveSessions
from workers.jobs.events import session_id_for

RUN = "nanecho-cached-ci"
RUN_DIR = f".training-progress/{RUN}"
SESSION_TIMEOUT = 240
FAST_LEASES = {"RETRAIN_LOCK_TTL_S": "2", "RETRAIN_BUSY_RETRY_S": "0.5", "RETRAIN_EVENT_RETRY_S": "0.5"}


@pytest.fixture
def services(tmp_path: Path, github, redis_url: str, clean_redis, app_key_pair) -> Iterator[Services]:
    with retrain_services(tmp_path, github[1], redis_url, app_key_pair[0], **FAST_LEASES) as running:
        yield running


def progress_commits(emu: GitHubEmulator) -> list[dict]:
    return [c for c in emu.git_log(REPO) if c["message"].startswith("retrain(")]


def file_at(emu: GitHubEmulator, path: str, oid: str | None = None) -> dict | list:
    raw = emu.read_file(REPO, path, ref=oid)
    assert raw is not None, f"{path} is missing"
    return json.loads(raw)


def history(emu: GitHubEmulator) -> list[dict]:
    raw = emu.read_file(REPO, f"{RUN_DIR}/history.jsonl") or b""
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def comment(emu: GitHubEmulator, text: str, comment_id: int, issue: int = 7) -> dict:
    return comment_event(text, sender="alice", repo=REPO, installation_id=42, comment_id=comment_id,
                         issue_number=issue, github=emu)


def session_of(comment_id: int) -> str:
    """The session a comment starts: named by the comment, not by the delivery that carried it."""
    return session_id_for(f"issue_comment:{REPO}:{comment_id}")


def completed_checks(emu: GitHubEmulator) -> list[dict]:
    return [c for c in emu.check_runs(REPO) if c["status"] == "completed"]


def assert_registry_consistent(emu: GitHubEmulator, store_root: Path) -> dict:
    """Every entry's stored weights are there and hash to what the registry says."""
    metadata = file_at(emu, f"{RUN_DIR}/cache/metadata.json")
    for checkpoint_id, entry in metadata.items():
        stored = store_root / entry["storage"]["key"]
        assert stored.is_file(), f"{checkpoint_id}: weights missing"
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == entry["storage"]["sha256"], checkpoint_id
    return metadata


@pytest.mark.parametrize("after_s", [0.0, 1.0, 2.0], ids=["kill-1", "kill-2", "kill-3"])
def test_worker_sigkilled_mid_session_resumes_and_commits_once(github, services, tmp_path, fault_report,
                                                              after_s: float) -> None:
    emu, _ = github
    set_ci_profile(emu, checkpoint_every_s=0.3)
    delivery = f"kill-{after_s}"
    inflight = tmp_path / "store" / REPO / RUN / "inflight" / f"{session_of(901)}.pt"
    assert post(services.web, comment(emu, "/retrain ci max_iters=800", 901), delivery=delivery) == 202
    wait_until(inflight.is_file, SESSION_TIMEOUT, "the first in-session checkpoint", services.train_log)
    time.sleep(after_s)
    [child] = pool_children(services.train)
    os.kill(child, signal.SIGKILL)
    assert progress_commits(emu) == [], "the session ended before the kill: nothing was tested"

    wait_until(lambda: completed_checks(emu), SESSION_TIMEOUT, "the check run to complete", services.train_log)
    time.sleep(1.0)  # room for a wrong second commit to show up
    [commit] = progress_commits(emu)
    session = file_at(emu, f"{RUN_DIR}/training_summary.json")["session"]
    resumed = [n for n in session["notes"] if "resumed this session's own in-session checkpoint" in n]
    assert resumed, session["notes"]
    at = int(re.search(r"at iteration (\d+)", resumed[0]).group(1))
    assert 0 < at < 800 and (session["start_iteration"], session["end_iteration"]) == (0, 800)
    assert [h["session"] for h in history(emu)] == [session_of(901)]
    assert list(assert_registry_consistent(emu, tmp_path / "store")) == [session["checkpoint_id"]]
    [check] = emu.check_runs(REPO)
    assert check["conclusion"] == "success"
    assert not inflight.exists()
    assert "SIGKILL" in services.train_log.read_text() or "signal 9" in services.train_log.read_text()
    fault_report(f"train worker's pool process SIGKILLed {after_s:.0f} s after its first in-session checkpoint",
                 f"redelivered, resumed at iteration {at} of 800, one commit {commit['oid'][:8]}, registry consistent")


def test_ten_concurrent_duplicate_deliveries_make_one_session(github, services, fault_report) -> None:
    emu, _ = github
    payload = comment(emu, "/retrain ci max_iters=60", 911)
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda: statuses.append(post(services.web, payload, delivery="dup-1")))
               for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(statuses) == {202: 1, 200: 9}
    wait_until(lambda: completed_checks(emu), SESSION_TIMEOUT, "the session", services.train_log)
    time.sleep(1.0)
    assert len(progress_commits(emu)) == 1 and len(emu.check_runs(REPO)) == 1
    assert len(history(emu)) == 1
    fault_report("the same delivery posted 10 times at once", "one 202 and nine 200s, exactly one session and commit")


def test_a_command_survives_github_failing_past_the_per_call_retries(github, services, fault_report) -> None:
    """GitHub answers 502 to every retry of one call: the receiver had answered 202, so GitHub will never
    send this delivery again; the events task itself must try again later, and nothing happens twice."""
    emu, _ = github
    emu.inject_fault("GET", r"/repos/octo/demo/collaborators/alice/permission", 502, times=MAX_ATTEMPTS)
    emu.inject_fault("POST", r"/repos/octo/demo/check-runs", 502, after=True)  # and a lost answer on the way
    assert post(services.web, comment(emu, "/retrain ci max_iters=40", 931), delivery="flaky-github") == 202
    wait_until(lambda: completed_checks(emu), SESSION_TIMEOUT, "the session", services.train_log)
    time.sleep(1.0)  # room for a second session or check run to show up
    assert len(progress_commits(emu)) == 1 and [h["session"] for h in history(emu)] == [session_of(931)]
    [check] = emu.check_runs(REPO)
    assert check["conclusion"] == "success"
    replies = [c["body"] for c in emu.comments(REPO, 7)]
    assert len(replies) == 1 and check["id"] and "committed in" in replies[0], replies  # queued, then edited
    assert "trying again" in services.events_log.read_text()
    fault_report(f"GitHub 502 on all {MAX_ATTEMPTS} tries of the permission check, then a check run's answer lost",
                 "events task tried again later; one check run, one reply, one commit")


def test_five_concurrent_comments_run_one_at_a_time_and_lose_nothing(github, services, tmp_path,
                                                                      fault_report) -> None:
    emu, _ = github
    threads = [
        threading.Thread(target=post, args=(services.web, comment(emu, "/retrain ci max_iters=300", 920 + n)),
                         kwargs={"delivery": f"concurrent-{n}"})
        for n in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    def answers() -> tuple[int, int]:  # as first written: a session's worker edits its reply later
        bodies = [c.json["body"] for c in emu.calls
                  if c.method == "POST" and c.path.endswith("/issues/7/comments") and c.status == 201]
        return sum("is queued" in b for b in bodies), sum("joins it" in b for b in bodies)

    wait_until(lambda: sum(answers()) == 5, 60, "an answer to each of the five comments", services.events_log)
    queued, coalesced = answers()
    wait_until(lambda: len(progress_commits(emu)) == queued, SESSION_TIMEOUT, f"{queued} commits", services.train_log)
    time.sleep(1.0)
    commits = progress_commits(emu)
    assert len(commits) == queued >= 2 and coalesced == 5 - queued
    log = emu.git_log(REPO)
    assert all(len(c["parents"]) == 1 for c in log[:-1]), "the branch history is linear"
    lines = history(emu)
    metadata = assert_registry_consistent(emu, tmp_path / "store")
    assert [h["checkpoint_id"] for h in lines if h["checkpoint_id"] not in metadata] == []
    assert len(lines) == queued
    sessions = sorted((e["session"]["started_at"], e["session"]["finished_at"], e["parent_checkpoint"], key)
                      for key, e in metadata.items())
    for (_, finished, _, earlier), (started, _, parent, _) in itertools.pairwise(sessions):
        assert finished <= started, "two sessions of one run overlapped"
        assert parent == earlier, "each session resumed from the one before it"
    fault_report("5 `/retrain ci` comments at once on one repository",
                 f"{queued} sessions one after another (each resumed the last), {coalesced} coalesced and told so, "
                 "linear history, every entry in the registry")


def test_a_commit_landing_during_a_session_is_kept_under_the_progress_commit(github, services, redis_url, tmp_path,
                                                                           fault_report) -> None:
    emu, _ = github
    live = LiveSessions(redis.Redis.from_url(redis_url))
    assert post(services.web, comment(emu, "/retrain ci max_iters=800", 931), delivery="stale-1") == 202
    wait_until(lambda: any(s.status == "running" and s.iteration for s in live.of_repo(REPO)), SESSION_TIMEOUT,
               "the session to be training", services.train_log)
    theirs = emu.commit_files(REPO, {"docs/written-meanwhile.md": b"a person's work\n"}, message="a person's commit")
    wait_until(lambda: progress_commits(emu), SESSION_TIMEOUT, "the progress commit", services.train_log)
    [ours] = progress_commits(emu)
    assert ours["parents"] == [theirs]
    assert emu.read_file(REPO, "docs/written-meanwhile.md") == b"a person's work\n"
    assert_registry_consistent(emu, tmp_path / "store")
    fault_report("another commit landed on the branch mid-session",
                 f"progress commit {ours['oid'][:8]} made on top of it, both kept")


def test_redis_restarted_while_a_session_trains(github, tmp_path, app_key_pair, fault_report) -> None:
    emu, github_url = github
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    outage = redis_server(port, tmp_path)
    outage.__enter__()
    try:
        with retrain_services(tmp_path, github_url, url, app_key_pair[0], **FAST_LEASES) as running:
            live = LiveSessions(redis.Redis.from_url(url))
            assert post(running.web, comment(emu, "/retrain ci max_iters=1500", 941), delivery="restart-1") == 202
            wait_until(lambda: any(s.status == "running" and s.iteration for s in live.of_repo(REPO)),
                       SESSION_TIMEOUT, "the session to be training", running.train_log)
            outage.__exit__(None, None, None)
            during = post(running.web, comment(emu, "/retrain help", 942), delivery="restart-2")
            time.sleep(1.0)
            outage = redis_server(port, tmp_path)
            outage.__enter__()
            wait_until(lambda: progress_commits(emu), SESSION_TIMEOUT, "the progress commit", running.train_log)
            after = wait_until(
                lambda: (s := post(running.web, comment(emu, "/retrain help", 943), delivery="restart-3")) != 503 and s,
                30, "the receiver to accept again",
            )
            wait_until(lambda: completed_checks(emu), 60, "the check run to complete", running.train_log)
    finally:
        outage.__exit__(None, None, None)
    assert (during, after) == (503, 202)
    [commit] = progress_commits(emu)
    session = file_at(emu, f"{RUN_DIR}/training_summary.json")["session"]
    assert session["end_iteration"] == 1500
    assert_registry_consistent(emu, tmp_path / "store")
    fault_report("Redis restarted (empty) while a session trained",
                 f"receiver 503 during the outage, 202 after; the session finished and committed {commit['oid'][:8]}")


def test_corrupt_inputs_are_reported_and_never_committed_wrongly(github, services, tmp_path, fault_report) -> None:
    emu, _ = github
    n = iter(range(950, 1000))

    def session(note: str | None = None) -> dict:
        before = len(progress_commits(emu))
        cid = next(n)
        assert post(services.web, comment(emu, "/retrain ci max_iters=20", cid), delivery=f"corrupt-{cid}") == 202
        wait_until(lambda: len(progress_commits(emu)) > before, SESSION_TIMEOUT, "a commit", services.train_log)
        found = file_at(emu, f"{RUN_DIR}/training_summary.json")["session"]
        if note is not None:
            assert any(note in line for line in found["notes"]), found["notes"]
        return found

    def registry() -> dict:
        return file_at(emu, f"{RUN_DIR}/cache/metadata.json")

    a, b = session(), session()
    # A checkpoint object whose bytes no longer match the registry's sha256: skipped, the other one is used.
    best = tmp_path / "store" / registry()[b["checkpoint_id"]]["storage"]["key"]
    flipped = bytearray(best.read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF
    best.write_bytes(bytes(flipped))
    c = session(note=f"skipped {b['checkpoint_id']}")
    assert c["resumed_from"] == a["checkpoint_id"]
    # A truncated checkpoint whose registry entry was edited to match it: it fails to load, and is skipped.
    metadata = registry()
    stored = tmp_path / "store" / metadata[c["checkpoint_id"]]["storage"]["key"]
    stored.write_bytes(stored.read_bytes()[:1000])
    metadata[c["checkpoint_id"]]["storage"].update(sha256=hashlib.sha256(stored.read_bytes()).hexdigest(), bytes=1000)
    emu.commit_files(REPO, {f"{RUN_DIR}/cache/metadata.json": json.dumps(metadata).encode()}, message="edit")
    d = session(note=f"skipped {c['checkpoint_id']}: checkpoint could not be read")
    assert d["resumed_from"] == a["checkpoint_id"]
    # metadata.json with wrong types in one entry: that entry is reported and left out, the rest stays.
    metadata = registry()
    metadata[a["checkpoint_id"]]["iteration"] = "many"
    emu.commit_files(REPO, {f"{RUN_DIR}/cache/metadata.json": json.dumps(metadata).encode()}, message="edit")
    session(note=a["checkpoint_id"])
    # metadata.json that is not JSON: a new registry is started, and the session says so.
    emu.commit_files(REPO, {f"{RUN_DIR}/cache/metadata.json": b"{not json"}, message="break")
    f = session(note="metadata.json is not valid JSON")
    assert f["checkpoint_id"] in registry()
    # A config with an unknown key: the requester is told, nothing runs, nothing is committed.
    commits = len(progress_commits(emu))
    emu.commit_files(REPO, {".github/retrain.yml": b"profiles: {ci: {n_layer: 2}}\nlearning_rate_typo: 3\n"},
                     message="typo")
    assert post(services.web, comment(emu, "/retrain ci", 999, issue=8), delivery="corrupt-config") == 202
    [reply] = wait_until(lambda: emu.comments(REPO, 8), 60, "the config problem's reply", services.events_log)
    assert "retrain.yml is invalid" in reply["body"] and "learning_rate_typo" in reply["body"]
    time.sleep(1.0)
    assert len(progress_commits(emu)) == commits
    fault_report("corrupt inputs: wrong sha256, truncated checkpoint, ill-typed and non-JSON metadata.json, "
                 "unknown config key",
                 "each reported in the session's notes or a reply; sessions continued from the next valid state; "
                 "the bad config ran nothing")


def test_a_whole_worker_lost_is_noticed_and_its_session_resumed(github, services, tmp_path, redis_url,
                                                                  monkeypatch, fault_report) -> None:
    """The machine goes: worker and pool die together, so Celery hands nothing back (Redis would restore the
    message only after the visibility timeout, hours). The orphan check sends it again; a new worker resumes."""
    from tests.processes import celery_worker
    from workers import tasks
    from workers.celery_app import create_celery
    from workers.coordination.orphans import recover_orphans

    emu, _ = github
    set_ci_profile(emu, checkpoint_every_s=0.3)
    delivery = "machine-lost"
    sid = session_of(961)
    inflight = tmp_path / "store" / REPO / RUN / "inflight" / f"{sid}.pt"
    assert post(services.web, comment(emu, "/retrain ci max_iters=1200", 961), delivery=delivery) == 202
    wait_until(inflight.is_file, SESSION_TIMEOUT, "the first in-session checkpoint", services.train_log)
    [child] = pool_children(services.train)
    os.kill(services.train.pid, signal.SIGSTOP)  # the worker cannot react: both go at once
    os.kill(child, signal.SIGKILL)
    os.kill(services.train.pid, signal.SIGKILL)
    services.train.wait()
    assert progress_commits(emu) == []

    client = redis.Redis.from_url(redis_url)
    monkeypatch.setenv("RETRAIN_REDIS_URL", redis_url)
    monkeypatch.setattr(tasks, "celery_app", create_celery(tasks.Settings(_env_file=None)))
    messages = tasks.session_messages(redis_url, tasks.Settings(_env_file=None).visibility_timeout_s)
    assert recover_orphans(client, messages, tasks.enqueue_session, quiet_for_s=1.0) == [], "its lease is still held"
    time.sleep(3.0)  # the lease (TTL 2 s) expires: nobody's heartbeat renews it
    assert recover_orphans(client, messages, tasks.enqueue_session, quiet_for_s=1.0) == [sid]
    assert recover_orphans(client, messages, tasks.enqueue_session, quiet_for_s=1.0) == [], "sent once"

    with celery_worker(services.env, tmp_path / "replacement.log", queues="train"):
        wait_until(lambda: completed_checks(emu), SESSION_TIMEOUT, "the resumed session", tmp_path / "replacement.log")
    [commit] = progress_commits(emu)
    session = file_at(emu, f"{RUN_DIR}/training_summary.json")["session"]
    resumed = [n for n in session["notes"] if "resumed this session's own in-session checkpoint" in n]
    assert resumed and session["end_iteration"] == 1200
    assert_registry_consistent(emu, tmp_path / "store")
    assert messages.get(sid) is None
    fault_report("the whole train worker (parent and pool) SIGKILLed, as when a machine is lost",
                 f"the orphan check sent the session again once; a new worker resumed it ({resumed[0].split(' (')[0]})"
                 f" and committed {commit['oid'][:8]} once")


def test_sigterm_saves_the_session_and_the_next_worker_continues_it(github, services, tmp_path, redis_url,
                                                                    fault_report) -> None:
    """A deploy or node drain: the worker's session saves where it is and goes back to the queue, the worker
    exits promptly (not hours later), and the next worker continues the session to its end."""
    from tests.processes import celery_worker

    emu, _ = github
    live = LiveSessions(redis.Redis.from_url(redis_url))
    assert post(services.web, comment(emu, "/retrain ci max_iters=3000", 971), delivery="sigterm") == 202
    wait_until(lambda: any(s.status == "running" and (s.iteration or 0) > 50 for s in live.of_repo(REPO)),
               SESSION_TIMEOUT, "the session to be training", services.train_log)
    asked = time.monotonic()
    services.train.send_signal(signal.SIGTERM)
    services.train.wait(timeout=60)
    took = time.monotonic() - asked
    inflight = tmp_path / "store" / REPO / RUN / "inflight" / f"{session_of(971)}.pt"
    assert inflight.is_file() and progress_commits(emu) == []
    [check] = emu.check_runs(REPO)
    assert check["output"]["title"].startswith("Paused at iteration")

    with celery_worker(services.env, tmp_path / "next.log", queues="train"):
        wait_until(lambda: completed_checks(emu), SESSION_TIMEOUT, "the continued session", tmp_path / "next.log")
    [commit] = progress_commits(emu)
    session = file_at(emu, f"{RUN_DIR}/training_summary.json")["session"]
    resumed = [n for n in session["notes"] if "resumed this session's own in-session checkpoint" in n]
    assert resumed and (session["start_iteration"], session["end_iteration"]) == (0, 3000)
    assert_registry_consistent(emu, tmp_path / "store")
    fault_report("SIGTERM to the train worker mid-session (a deploy)",
                 f"saved and handed back; the worker exited in {took:.1f} s; the next worker "
                 f"{resumed[0].split(' (')[0].replace('resumed', 'resumed from')} and committed {commit['oid'][:8]}")
