"""`/retrain history` and `/retrain sample` with real parts: signed comments posted to the receiver, the events
and train workers as real Celery processes, a real Redis, and the GitHub emulator over a real git repository.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.github.text_limits import MAX_COMMENT_CHARS
from tests.conftest import REPO
from tests.payloads import comment_event
from tests.processes import wait_until
from tests.services import Services, post, retrain_services

RUN_DIR = ".training-progress/nanecho-cached-ci"
SESSION_TIMEOUT = 240


@pytest.fixture
def services(tmp_path: Path, github, redis_url: str, clean_redis, app_key_pair) -> Iterator[Services]:
    with retrain_services(tmp_path, github[1], redis_url, app_key_pair[0], RETRAIN_SAMPLES_PER_HOUR="2",
                          RETRAIN_SAMPLE_TOKENS="60") as running:
        yield running


def reply_on(emu, issue: int, services: Services, what: str, log: Path | None = None) -> str:
    replies = wait_until(lambda: emu.comments(REPO, issue), 120, what, log or services.events_log)
    assert len(replies) == 1, replies
    return replies[0]["body"]


def say(emu, services: Services, body: str, *, comment_id: int, issue: int, sender: str = "alice") -> None:
    payload = comment_event(body, sender=sender, repo=REPO, installation_id=42, comment_id=comment_id,
                            issue_number=issue, github=emu)
    assert post(services.web, payload, delivery=f"delivery-{comment_id}") == 202


def test_history_and_samples_after_a_committed_session(github, services: Services) -> None:
    emu, _ = github

    # Before any session: history says there is none, a sample says there is no checkpoint (the train worker).
    say(emu, services, "/retrain history", comment_id=700, issue=10)
    assert "no training session of this repository has been committed yet" in reply_on(emu, 10, services, "history")
    say(emu, services, "/retrain sample", comment_id=701, issue=11)
    empty = reply_on(emu, 11, services, "the no-checkpoint reply", services.train_log)
    assert "@alice there is no checkpoint to sample from yet" in empty and "`/retrain` trains one" in empty

    # One session, committed.
    say(emu, services, "/retrain ci", comment_id=702, issue=12)
    commits = wait_until(lambda: [c for c in emu.git_log(REPO) if c["message"].startswith("retrain(")],
                         SESSION_TIMEOUT, "the progress commit", services.train_log)
    oid = commits[0]["oid"]
    summary = json.loads(emu.read_file(REPO, f"{RUN_DIR}/training_summary.json", ref=oid))["session"]

    # History: one row with the session's figures and a link to its commit.
    say(emu, services, "/retrain history", comment_id=703, issue=13)
    table = reply_on(emu, 13, services, "the history table")
    [row] = [line for line in table.splitlines() if line.startswith("| 20")]
    assert f"0 → {summary['end_iteration']}" in row and f"{summary['val_bpb_after']:.4f}" in row and "★" in row
    assert f"/{REPO}/commit/{oid})" in row and "issue_comment (alice)" in row

    # A sample from that checkpoint, written by the train worker process.
    say(emu, services, "/retrain sample Once upon a ``` time", comment_id=704, issue=14)
    body = reply_on(emu, 14, services, "the sample", services.train_log)
    assert f"`{summary['checkpoint_id']}` (the best `ci` checkpoint: iteration {summary['end_iteration']}" in body
    fence, text = re.search(r"^(`{4,})text\n(.*)\n\1$", body, re.MULTILINE | re.DOTALL).groups()
    assert len(fence) == 4 and text.startswith("Once upon a ``` time") and len(text) > len("Once upon a ``` time")
    assert len(body) <= MAX_COMMENT_CHARS and "60 token(s)" in body
    # The task logs its outcome after the reply is posted: wait for the line rather than race it.
    done = f"sample for {REPO}#14: sampled 60 tokens from {summary['checkpoint_id']}"
    wait_until(lambda: done in services.train_log.read_text(), 30, "the sample's log line", services.train_log)
    assert "sample for" not in services.events_log.read_text()  # the events worker has no model to run
    assert emu.reactions(REPO, 704) == ["eyes"]

    # bob may read but not write: refused, and not counted.
    say(emu, services, "/retrain sample hi", comment_id=705, issue=15, sender="bob")
    refused = reply_on(emu, 15, services, "the refusal")
    assert "@bob you have `read` permission" in refused and "asking for a sample needs `write`" in refused

    # The third sample this hour (the limit is 2): told so, and nothing runs.
    say(emu, services, "/retrain sample again", comment_id=706, issue=16)
    limited = reply_on(emu, 16, services, "the quota reply")
    assert "had its 2 sample(s) this hour" in limited
    assert emu.reactions(REPO, 706) == ["confused"]
    assert "#16" not in services.train_log.read_text()
    assert emu.violations == []
