"""The whole product with real parts: a signed `/retrain` comment posted over HTTP to the receiver, real
Celery worker processes for the events and train queues, a real Redis, and the GitHub emulator backed by a
real git repository.
"""

from __future__ import annotations

import json
import math
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO
from tests.emulator import GitHubEmulator
from tests.payloads import comment_event
from tests.processes import wait_until
from tests.services import post, retrain_services

RUN_DIR = ".training-progress/nanecho-cached-ci"
SESSION_TIMEOUT = 240


@pytest.fixture
def services(tmp_path: Path, github, redis_url: str, clean_redis, app_key_pair) -> Iterator[str]:
    with retrain_services(tmp_path, github[1], redis_url, app_key_pair[0]) as running:
        yield running.web


def scrape(web: str) -> dict[tuple[str, tuple], float]:
    """GET /metrics, parsed: (sample name, sorted labels) → value."""
    with urllib.request.urlopen(f"{web}/metrics", timeout=10) as resp:
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def progress_commits(emu: GitHubEmulator) -> list[dict]:
    return [c for c in emu.git_log(REPO) if c["message"].startswith("retrain(")]


def summary_at(emu: GitHubEmulator, oid: str) -> dict:
    return json.loads(emu.read_file(REPO, f"{RUN_DIR}/training_summary.json", ref=oid))


def test_comments_become_committed_sessions_and_the_second_resumes_the_first(github, services, tmp_path) -> None:
    emu, _ = github
    web = services
    log = tmp_path / "worker.log"

    # A first /retrain ci, delivered twice by GitHub: one session.
    first = comment_event("/retrain ci", sender="alice", repo=REPO, installation_id=42, comment_id=501, github=emu)
    assert post(web, first, delivery="delivery-1") == 202
    assert post(web, first, delivery="delivery-1") == 200
    wait_until(lambda: len(progress_commits(emu)) == 1, SESSION_TIMEOUT, "the first progress commit", log)
    assert "eyes" in emu.reactions(REPO, 501)
    c1 = progress_commits(emu)[0]
    s1 = summary_at(emu, c1["oid"])["session"]
    metadata1 = json.loads(emu.read_file(REPO, f"{RUN_DIR}/cache/metadata.json", ref=c1["oid"]))
    assert list(metadata1) == [s1["checkpoint_id"]]
    entry1 = metadata1[s1["checkpoint_id"]]
    assert entry1["storage"]["sha256"] and entry1["storage"]["bytes"] > 0
    assert (tmp_path / "store" / entry1["storage"]["key"]).is_file()
    # the registry names an object in the worker's store, never where the store is
    assert "uri" not in entry1["storage"] and str(tmp_path) not in json.dumps(metadata1)
    assert entry1["parent_checkpoint"] is None and entry1["iteration"] == 40

    # A second comment: a new session resumed from the first one's weights.
    second = comment_event("/retrain ci", sender="alice", repo=REPO, installation_id=42, comment_id=502, github=emu)
    assert post(web, second, delivery="delivery-2") == 202
    wait_until(lambda: len(progress_commits(emu)) == 2, SESSION_TIMEOUT, "the second progress commit", log)
    c2 = progress_commits(emu)[0]
    assert c2["parents"] == [c1["oid"]]
    s2 = summary_at(emu, c2["oid"])["session"]
    metadata2 = json.loads(emu.read_file(REPO, f"{RUN_DIR}/cache/metadata.json", ref=c2["oid"]))
    entry2 = metadata2[s2["checkpoint_id"]]
    assert set(metadata2) == {s1["checkpoint_id"], s2["checkpoint_id"]}
    assert entry2["parent_checkpoint"] == s1["checkpoint_id"]
    assert entry2["iteration"] == 80 > entry1["iteration"]
    assert s2["start_iteration"] == 40
    # Started from the first session's weights: on the same validation set they score what they scored when
    # the first session ended, far below a fresh model's ≈ ln(256) = 5.55 (one batch's training loss is no
    # measure: a loss spike at the boundary once put 1.16 nats between two sessions' edge batches).
    assert s2["validation_set"] == s1["validation_set"]
    assert abs(s2["val_loss_before"] - s1["val_loss_after"]) < 1e-4, (s1, s2)
    assert s2["val_loss_before"] < math.log(256) - 1.5

    # Exactly two progress commits on top of the initial one, all made through the API.
    history = emu.git_log(REPO)
    assert len(history) == 3 and history[-1]["parents"] == []
    mutations = [c for c in emu.calls if c.graphql_operation and "createCommitOnBranch" in c.graphql_operation]
    assert len(mutations) == 2
    # The repository does not turn on publish.releases: no release, not even a look for one, and no word of it.
    assert emu.releases(REPO) == [] and not [c for c in emu.calls if "/releases" in c.path]

    # One reply per session: written when it was queued (with the check run), edited in place while it trained
    # and when it ended (with the commit, the tables, the chart and a few lines the new weights wrote).
    replies = [c["body"] for c in emu.comments(REPO, 7)]
    assert len(replies) == 2
    posted = [c.json["body"] for c in emu.calls if c.method == "POST" and c.path.endswith("/issues/7/comments")]
    assert len(posted) == 2 and all("is queued" in body for body in posted)
    edits = [c for c in emu.calls if c.method == "PATCH" and "/issues/comments/" in c.path]
    assert len({c.path for c in edits}) == 2 and any("is running" in c.json["body"] for c in edits)
    assert c1["oid"] in replies[0] and c2["oid"] in replies[1]
    assert f"resumed from `{s1['checkpoint_id']}`" in replies[1]
    for body in replies:
        assert "| tokens/s |" in body and "| stopped | after its iterations |" in body and "```text\n" in body
        assert f"{RUN_DIR}/loss.svg)" in body and "/tree/" in body
    assert not any("published" in reply for reply in replies)
    assert emu.reactions(REPO, 502) == ["eyes", "rocket"]

    # Each session has its check run: queued, then in progress, then completed with the summary and chart.
    checks = emu.check_runs(REPO)
    assert [(c["name"], c["status"], c["conclusion"]) for c in checks] == [("Retrain (ci)", "completed", "success")] * 2
    statuses = [body.get("status") for body in emu.check_run_history(REPO, checks[1]["id"])]
    assert statuses[0] == "queued" and "in_progress" in statuses and statuses[-1] == "completed"
    assert c2["oid"][:12] in checks[1]["output"]["summary"]
    final = emu.check_run_history(REPO, checks[1]["id"])[-1]["output"]  # the body the App sent (GitHub keeps images)
    assert final["images"][0]["image_url"].endswith(f"/raw/{c2['oid']}/{RUN_DIR}/loss.svg")
    assert f"/raw/{c2['oid']}/{RUN_DIR}/loss.svg" in checks[1]["output"]["summary"]
    assert emu.read_file(REPO, f"{RUN_DIR}/loss.svg", ref=c2["oid"]).startswith(b"<svg")
    assert len(emu.read_file(REPO, f"{RUN_DIR}/history.jsonl", ref=c2["oid"]).splitlines()) == 2
    assert emu.violations == []

    # What an operator sees: the receiver's /metrics, and JSON log lines that carry the ids and no token.
    samples = scrape(web)
    assert samples[("retrain_deliveries_total", (("event", "issue_comment"), ("outcome", "accepted")))] == 2
    assert samples[("retrain_deliveries_total", (("event", "issue_comment"), ("outcome", "duplicate")))] == 1
    assert samples[("retrain_enqueue_seconds_count", ())] == 3
    assert samples[("retrain_sessions_total", (("outcome", "committed"), ("profile", "ci")))] == 2
    assert samples[("retrain_queue_depth", (("queue", "train"),))] == 0
    series = (("profile", "ci"), ("repo", REPO))
    assert samples[("retrain_training_tokens_per_second", series)] > 0
    assert 0 < samples[("retrain_validation_loss", series)] < math.log(256)
    assert samples[("retrain_validation_bits_per_byte", series)] == pytest.approx(
        samples[("retrain_validation_loss", series)] / math.log(2))
    assert ("retrain_training_loss", series) in samples
    calls = {labels: v for (name, labels), v in samples.items() if name == "retrain_github_api_calls_total"}
    assert calls[(("method", "POST"), ("status", "201"))] >= 4  # check runs, comments, reactions at least
    assert samples[("retrain_github_rate_limit_remaining", (("resource", "core"),))] > 0
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert {s1["id"], s2["id"]} <= {line.get("session_id") for line in lines}
    assert "ghs_" not in log.read_text() and "ghs_" not in (tmp_path / "events.log").read_text()


def test_refused_and_forged_deliveries_start_nothing(github, services, tmp_path) -> None:
    emu, _ = github
    web = services
    payload = comment_event("/retrain ci", sender="alice", repo=REPO, installation_id=42, comment_id=601, github=emu)
    assert post(web, payload, delivery=str(uuid.uuid4()), secret="not-the-secret") == 401
    assert post(web, payload, delivery=str(uuid.uuid4()), secret=None) == 401

    bob = comment_event("/retrain ci", sender="bob", repo=REPO, installation_id=42, comment_id=602, issue_number=9,
                        github=emu)
    assert post(web, bob, delivery=str(uuid.uuid4())) == 202
    replies = wait_until(lambda: emu.comments(REPO, 9), 60, "the refusal reply", tmp_path / "events.log")
    assert "@bob" in replies[0]["body"] and "`read` permission" in replies[0]["body"]
    assert emu.reactions(REPO, 602) == ["-1"] and emu.reactions(REPO, 601) == []
    assert emu.check_runs(REPO) == []
    assert progress_commits(emu) == []
    assert emu.violations == []
