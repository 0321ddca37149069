"""`/retrain sample`: the reply's fence and size (pure), the hourly quota (real Redis), and what the events
worker decides before a train worker samples (the emulator): who may, which profile, how many."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from app.config.settings import Settings
from app.features.decisions import Origin
from app.github.text_limits import MAX_COMMENT_CHARS
from app.writing import replies
from tests.conftest import INSTALLATION_ID, REPO
from tests.payloads import comment_event
from workers.coordination.sample_quota import HOUR_S, SampleQuota
from workers.jobs.events import handle_event

ORIGIN = Origin(repo=REPO, installation_id=1, trigger="issue_comment", sender="alice", issue_number=7,
                comment_id=5, line="/retrain sample Once")
MARKER_ROOM = len("\n\n<!-- retrain:0123456789abcdef0123456789abcdef -->")  # what create_comment adds


def block_of(body: str) -> tuple[str, str]:
    """(fence, content) of the reply's one code block; fails when the block is not closed by its own fence."""
    match = re.search(r"^(`{3,})text\n(.*)\n\1$", body, re.MULTILINE | re.DOTALL)
    assert match is not None, body[-300:]
    return match[1], match[2]


def sample(text: str, prompt: str = "Once", **kw: Any) -> str:
    return replies.sample(ORIGIN, prompt=prompt, text=text, checkpoint="ckpt_20260101_000000_40_abcd1234",
                          profile="ci", iteration=40, val_bpb=3.5, tokens=200, **kw)


@pytest.mark.parametrize("text", ["", " upon a time", "```\nmalicious\n```", "x ````` y `` z", "`" * 40])
def test_the_fence_is_longer_than_any_backtick_run_so_nothing_closes_it_early(text: str) -> None:
    fence, content = block_of(sample(text))
    assert content == "Once" + text
    assert len(fence) > max((len(r) for r in re.findall("`+", content)), default=0) and len(fence) >= 3
    assert not any(line.strip().startswith(fence) for line in content.splitlines())


def test_the_reply_says_which_checkpoint_and_shows_no_control_characters() -> None:
    body = sample("a\x00b\x1b[31mc\td\n")
    assert ("`ckpt_20260101_000000_40_abcd1234` (the best `ci` checkpoint: iteration 40, 3.5000 val bits per byte)"
            in body)
    assert "\x00" not in body and "\x1b" not in body and "\td\n" in body
    hostile = replies.sample(ORIGIN, prompt="", text="x", checkpoint="`x`\n# pwned", profile="ci", iteration=1,
                             val_bpb=None, tokens=1)
    assert "pwned" not in hostile and "a checkpoint with an unusual id" in hostile


def test_a_huge_sample_is_cut_to_fit_githubs_comment_limit_and_keeps_its_fence() -> None:
    text = ("word " * 20 + "`" * 7 + "\n") * 2000  # ~230,000 characters, backtick runs of 7
    body = sample(text)
    assert len(body) + MARKER_ROOM <= MAX_COMMENT_CHARS
    fence, content = block_of(body)
    assert len(fence) == 8 and content.startswith("Once" + text[:1000])
    assert body.endswith("(the sample was cut to fit GitHub's comment limit)")
    assert len(sample("short")) < 1000 and "cut" not in sample("short")


def test_the_quota_counts_per_repository_per_hour(clean_redis) -> None:
    quota = SampleQuota(clean_redis, per_hour=2)
    now = 100 * HOUR_S + 600
    assert [quota.take(REPO, now).ok for _ in range(3)] == [True, True, False]
    assert quota.take(REPO, now).wait_s == HOUR_S - 600 + 1
    assert quota.take("octo/other", now).ok  # another repository has its own
    assert quota.take(REPO, now + HOUR_S).ok  # the next hour starts afresh
    assert 0 < clean_redis.ttl(f"retrain:samples:{REPO}:100") <= HOUR_S + 60


def ask(github, settings: Settings, body: str, *, sender: str = "alice", comment_id: int = 77) -> tuple[str, list]:
    sent: list[dict[str, Any]] = []
    payload = comment_event(body, sender=sender, repo=REPO, installation_id=INSTALLATION_ID, comment_id=comment_id,
                            github=github[0])
    outcome = asyncio.run(handle_event(settings, "issue_comment", f"d-{comment_id}", payload, lambda m: None,
                                       enqueue_sample=sent.append))
    return outcome, sent


def test_a_permitted_sample_is_handed_to_a_train_worker_with_exactly_this_message(github, settings) -> None:
    emu, _ = github
    outcome, sent = ask(github, settings, "/retrain sample  The echo `x`")
    assert outcome == "enqueued a sample of ci"
    assert [(m["profile"], m["prompt"], m["origin"]["issue_number"], m["origin"]["comment_id"]) for m in sent] == [
        ("ci", "The echo `x`", 7, 77)]
    assert emu.reactions(REPO, 77) == ["eyes"] and emu.comments(REPO, 7) == []


@pytest.mark.parametrize(("body", "sender", "reply_part", "reaction"), [
    ("/retrain sample hi", "bob", "you have `read` permission on this repository; asking for a sample needs `write`",
     "-1"),
    ("/retrain sample profile=huge hi", "alice", "unknown profile `huge`", "confused"),
])
def test_a_sample_is_refused_to_whom_the_config_does_not_allow_and_for_unknown_profiles(
        github, settings, body, sender, reply_part, reaction) -> None:
    emu, _ = github
    _, sent = ask(github, settings, body, sender=sender)
    assert sent == []
    [reply] = emu.comments(REPO, 7)
    assert f"@{sender}" in reply["body"] and reply_part in reply["body"]
    assert emu.reactions(REPO, 77) == [reaction]


def test_past_the_hourly_quota_the_requester_is_told(github, settings) -> None:
    emu, _ = github
    settings = settings.model_copy(update={"samples_per_hour": 2})
    outcomes = [ask(github, settings, f"/retrain sample {i}", comment_id=80 + i)[0] for i in range(3)]
    assert outcomes == ["enqueued a sample of ci"] * 2 + ["refused: over the repository's samples per hour"]
    [reply] = emu.comments(REPO, 7)
    assert "had its 2 sample(s) this hour" in reply["body"] and "minute(s)" in reply["body"]
    assert emu.reactions(REPO, 82) == ["confused"]
