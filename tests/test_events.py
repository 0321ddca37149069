"""The events task against the emulator: what a comment leads to, and the exact message handed to the
train queue (the contract between the events and train workers)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from tests.conftest import APP_ID, INSTALLATION_ID, REPO
from tests.payloads import comment_event
from workers.events import handle_event, session_id_for


@pytest.fixture
def settings(github, tmp_path: Path, app_key_pair) -> Settings:
    key = tmp_path / "app.pem"
    key.write_bytes(app_key_pair[0])
    return Settings(_env_file=None, app_id=APP_ID, private_key_path=key, github_api_url=github[1])


def handle(settings: Settings, body: str, *, sender: str = "alice", comment_id: int = 77) -> tuple[str, list]:
    sent: list[dict[str, Any]] = []
    payload = comment_event(body, sender=sender, repo=REPO, installation_id=INSTALLATION_ID, comment_id=comment_id)
    outcome = asyncio.run(handle_event(settings, "issue_comment", "delivery-9", payload, sent.append))
    return outcome, sent


def test_a_permitted_command_reacts_and_enqueues_exactly_this_message(github, settings) -> None:
    emu, _ = github
    outcome, sent = handle(settings, "/retrain ci max_iters=12")
    assert sent == [
        {
            "context": {"repo": REPO, "installation_id": INSTALLATION_ID, "issue_number": 7, "comment_id": 77,
                        "sender": "alice", "line": "/retrain ci max_iters=12"},
            "request": {"session_id": session_id_for("delivery-9"), "profile": "ci", "max_iters": 12,
                        "trigger": "issue_comment", "sender": "alice", "delivery_id": "delivery-9"},
        }
    ]
    assert outcome.startswith("enqueued session")
    assert emu.reactions(REPO, 77) == ["eyes"]
    assert emu.comments(REPO, 7) == []


@pytest.mark.parametrize(
    ("body", "sender", "reply_part"),
    [
        ("/retrain ci", "bob", "you have `read` permission"),
        ("/retrain ci", "mallory", "you have `none` permission"),
        ("/retrain huge", "alice", "unknown profile `huge`; valid profiles: ci, full, scheduled"),
        ("/retrain ci colour=blue", "alice", "unknown argument `colour=blue`"),
    ],
)
def test_refused_or_malformed_commands_get_a_reply_and_start_nothing(github, settings, body, sender, reply_part):
    emu, _ = github
    _, sent = handle(settings, body, sender=sender)
    assert sent == []
    [reply] = emu.comments(REPO, 7)
    assert reply["body"].startswith("<!-- retrain -->\n> " + body)
    assert f"@{sender}" in reply["body"] and reply_part in reply["body"]
    assert "eyes" not in emu.reactions(REPO, 77)


def test_an_invalid_repository_config_is_reported_to_the_requester(github, settings) -> None:
    emu, _ = github
    emu.commit_files(REPO, {".github/retrain.yml": b"retention: {max_checkpoints: 0}\n"})
    _, sent = handle(settings, "/retrain")
    assert sent == []
    [reply] = emu.comments(REPO, 7)
    assert "retention.max_checkpoints" in reply["body"]


def test_comments_without_a_command_make_no_api_calls(github, settings) -> None:
    emu, _ = github
    outcome, sent = handle(settings, "thanks!")
    assert outcome.startswith("ignored") and sent == [] and emu.calls == []
