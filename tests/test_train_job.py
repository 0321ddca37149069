"""The train worker's job against the emulator and a real Redis: live status while training, and a
cancel that stops a running session, which commits what it trained and ends its check run cancelled."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
import yaml

from app.config.settings import Settings
from app.features.decisions import Origin
from app.github.auth import TokenCache
from app.github.client import installation_client
from tests.conftest import INSTALLATION_ID, REPO
from tests.repos import TINY_CONFIG, repo_files
from workers.coordination.live import LiveSession, LiveSessions
from workers.jobs.train_job import Coordination, run_github_session
from workers.session.export import EXPORT_FILES
from workers.session.session import SessionRequest
from workers.session.snapshot import MAX_FILE_BYTES

RUN_DIR = ".training-progress/nanecho-cached-ci"


@pytest.fixture(autouse=True)
def commented(github) -> None:
    """The issue and comment `origin()` names exist, as they do for any session a comment started."""
    github[0].add_comment(REPO, 3, comment_id=31)


def origin() -> Origin:
    return Origin(repo=REPO, installation_id=INSTALLATION_ID, trigger="issue_comment", sender="alice",
                  issue_number=3, comment_id=31, line="/retrain ci")


def queued_check_run(settings: Settings, head_sha: str) -> int:
    async def create() -> int:
        async with installation_client(settings, INSTALLATION_ID) as gh:
            check = await gh.create_check_run(REPO, name="Retrain (ci)", head_sha=head_sha, status="queued",
                                              external_id="retrain:ci")
            return check.id

    return asyncio.run(create())


def run_job(settings: Settings, live: LiveSessions, max_iters: int, check_run_id: int,
            session_id: str = "s" * 32) -> str:
    request = SessionRequest(session_id=session_id, profile="ci", max_iters=max_iters, trigger="issue_comment",
                             sender="alice")
    return asyncio.run(run_github_session(settings, origin(), request, check_run_id, tokens=TokenCache(),
                                         coordination=Coordination(live)))


def test_cancel_stops_a_running_session_which_commits_what_it_trained(github, settings, clean_redis) -> None:
    emu, _ = github
    live = LiveSessions(clean_redis)
    seen: dict[str, LiveSession] = {}

    def cancel_once_running() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            record = live.get(REPO, "s" * 32)
            if record is not None and record.status == "running" and record.iteration:
                seen["running"] = record
                live.cancel(REPO)
                return
            time.sleep(0.05)

    check_id = queued_check_run(settings, emu.head(REPO))
    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    outcome = run_job(settings, live, max_iters=5000, check_run_id=check_id)
    canceller.join()
    assert "committed" in outcome
    assert seen["running"].max_iters == 5000
    session = json.loads(emu.read_file(REPO, f"{RUN_DIR}/training_summary.json"))["session"]
    assert 0 < session["end_iteration"] < 5000
    assert any("stopped on request after" in note for note in session["notes"])
    assert live.of_repo(REPO) == []
    [check] = emu.check_runs(REPO)
    assert (check["status"], check["conclusion"]) == ("completed", "cancelled")
    assert check["output"]["title"].startswith("Cancelled after")
    [reply] = emu.comments(REPO, 3)
    assert "stopped on request" in reply["body"]


def test_a_session_cancelled_while_queued_never_trains(github, settings, clean_redis) -> None:
    emu, _ = github
    live = LiveSessions(clean_redis)
    live.put(REPO, LiveSession("q" * 32, "ci", "queued", "issue_comment", "alice"))
    live.cancel(REPO)
    head = emu.head(REPO)
    check_id = queued_check_run(settings, head)
    assert "cancelled before it started" in run_job(settings, live, 10, check_id, session_id="q" * 32)
    assert emu.head(REPO) == head and live.of_repo(REPO) == []
    assert emu.check_runs(REPO)[0]["conclusion"] == "cancelled"
    assert "cancelled before it started" in emu.comments(REPO, 3)[0]["body"]


def test_training_text_over_the_cap_fails_the_session_with_what_to_do(github, settings, clean_redis) -> None:
    emu, _ = github
    cap = 4 * MAX_FILE_BYTES  # RETRAIN_MAX_SNAPSHOT_BYTES, the operator's (default MAX_TOTAL_BYTES)
    settings = settings.model_copy(update={"max_snapshot_bytes": cap})
    big = b"the harbour bells ring before dawn. " * (MAX_FILE_BYTES // 36)  # just under the per-file cap
    over = cap // len(big) + 1
    emu.commit_files(REPO, {f"notes/archive/{i:02}.md": big for i in range(over)})  # git stores it compressed
    head = emu.head(REPO)
    check_id = queued_check_run(settings, head)
    outcome = run_job(settings, LiveSessions(clean_redis), 10, check_id)
    notes = [c for p, c in repo_files().items() if p.startswith("notes/")]
    count, selected = over + len(notes), over * len(big) + sum(map(len, notes))
    assert outcome.startswith(f"session {'s' * 32} not run: the {count} files data.include selects")
    [check] = emu.check_runs(REPO)
    assert (check["status"], check["conclusion"]) == ("completed", "failure")
    assert check["output"]["summary"] == (
        f"the {count} files data.include selects are {selected:,} bytes together, over the "
        f"{cap:,} bytes a session reads; narrow data.include in .github/retrain.yml (a folder, or `!` "
        "patterns to leave large files out)")
    assert not [c for c in emu.calls if "/git/blobs/" in c.path]  # nothing downloaded
    assert emu.head(REPO) == head
    assert "narrow data.include" in emu.comments(REPO, 3)[0]["body"]


def test_a_branch_rule_refusing_the_commit_fails_the_session_with_githubs_reason(github, settings,
                                                                                 clean_redis) -> None:
    """GraphQL refuses the commit for a ruleset and the Git Data ref update for branch protection: the
    session says so in its check run and reply, names what to change, and keeps its checkpoint."""
    emu, _ = github
    head = emu.head(REPO)
    emu.inject_fault("POST", "/graphql", 200, body_contains="createCommitOnBranch", body={"errors": [
        {"type": "UNPROCESSABLE", "message": "Repository rule violations found\n\nChanges must be made through a "
                                             "pull request."}]})
    emu.inject_fault("PATCH", r"/repos/octo/demo/git/refs/heads/main", 422, body={
        "message": "Protected branch update failed for refs/heads/main.",
        "documentation_url": "https://docs.github.com/articles/about-protected-branches"})
    check_id = queued_check_run(settings, head)
    outcome = run_job(settings, LiveSessions(clean_redis), 10, check_id)
    assert "not run: GitHub refused the commit to `main`: Protected branch update failed" in outcome
    [check] = emu.check_runs(REPO)
    assert (check["status"], check["conclusion"]) == ("completed", "failure")
    assert "Protected branch update failed" in check["output"]["summary"]
    assert "branch protection or rulesets" in check["output"]["summary"]
    assert emu.head(REPO) == head
    assert len([c for c in emu.calls if c.method == "PATCH" and "/git/refs/" in c.path]) == 1

    # The rule is lifted: the next session commits its own checkpoint and the refused one, kept in the store.
    later = run_job(settings, LiveSessions(clean_redis), 10, queued_check_run(settings, head), session_id="t" * 32)
    assert later.startswith(f"session {'t' * 32} committed")
    registry = json.loads(emu.read_file(REPO, f"{RUN_DIR}/cache/metadata.json"))
    assert len(registry) == 2, list(registry)


def test_a_redelivered_committed_session_finishes_its_release_and_trains_nothing(github, settings,
                                                                                 clean_redis) -> None:
    """The first delivery commits but its release is left a draft part filled (the weights refused here; a
    worker lost mid-upload leaves the same); the redelivery finds it by its tag and finishes it, sending only
    what is missing."""
    emu, _ = github
    config = yaml.safe_load(TINY_CONFIG)
    config["publish"] = {"releases": True}
    emu.commit_files(REPO, {".github/retrain.yml": yaml.safe_dump(config).encode()})
    emu.max_asset_bytes = 100_000
    first = run_job(settings, LiveSessions(clean_redis), 10, queued_check_run(settings, emu.head(REPO)))
    assert first.startswith(f"session {'s' * 32} committed")
    [draft] = emu.releases(REPO)
    assert draft["draft"] and "model.safetensors" not in {a["name"] for a in draft["assets"]}
    commit = emu.head(REPO)

    emu.max_asset_bytes = 2 * 1024**3 - 1
    again = run_job(settings, LiveSessions(clean_redis), 10, queued_check_run(settings, commit))
    assert "was already committed" in again and emu.head(REPO) == commit
    [release] = emu.releases(REPO)
    assert release["id"] == draft["id"] and not release["draft"] and release["target_commitish"] == commit
    assert sorted(a["name"] for a in release["assets"]) == sorted(EXPORT_FILES)
    sent = [c.query.get("name") for c in emu.calls if c.host == "uploads.github.com"]
    assert sorted(sent) == sorted([*EXPORT_FILES, "model.safetensors"])  # each once, the refused one twice
    assert "published release" in emu.check_runs(REPO)[1]["output"]["summary"]


def test_init_from_reads_only_under_the_operators_roots_in_the_app(github, settings, clean_redis, tmp_path) -> None:
    """A repository's config names `init_from`; the worker's files are not the repository's to read."""
    from tests.test_pretrained import save_tiny_gpt2

    emu, _ = github
    secret = tmp_path / "worker-files"
    save_tiny_gpt2(secret, b"text for merges " * 100)  # a perfectly good model, but not the operator's
    config = yaml.safe_load(TINY_CONFIG)
    config["profiles"]["ci"]["init_from"] = str(secret)
    emu.commit_files(REPO, {".github/retrain.yml": yaml.safe_dump(config).encode()}, message="pretrained")
    check_id = queued_check_run(settings, emu.head(REPO))
    head = emu.head(REPO)
    outcome = run_job(settings, LiveSessions(clean_redis), 4, check_id)
    assert "is not a model this App may read" in outcome and "RETRAIN_PRETRAINED_ROOTS (none)" in outcome
    [check] = emu.check_runs(REPO)
    assert check["conclusion"] == "failure" and "RETRAIN_PRETRAINED_ROOTS" in check["output"]["summary"]
    assert emu.head(REPO) == head  # nothing committed

    allowed = settings.model_copy(update={"pretrained_roots": (str(tmp_path),)})
    check_id = queued_check_run(allowed, head)
    outcome = run_job(allowed, LiveSessions(clean_redis), 4, check_id, session_id="t" * 32)
    assert outcome.startswith(f"session {'t' * 32} committed")
    summary = json.loads(emu.read_file(REPO, f"{RUN_DIR}/training_summary.json"))
    assert any("started a new lineage from the pretrained model" in n for n in summary["session"]["notes"])
