"""A session's report as GitHub receives and renders it (issue 15, point 3): hostile model output and a flood of
notes still give a reply and a check run within GitHub's limits, whose Markdown parses into the tables, one
fenced block holding exactly what the model wrote, and the closing line after it."""

from __future__ import annotations

import asyncio

from markdown_it import MarkdownIt

from app.features.decisions import Origin
from app.github.client import installation_client
from app.github.text_limits import MAX_CHECK_TEXT_BYTES, MAX_COMMENT_CHARS
from app.writing import check_output, replies
from tests.conftest import INSTALLATION_ID, REPO

HOSTILE_SAMPLE = "the echo ```` breaks\n```\n</details><!-- x --> | a | b |\n\x1b[31mred\x07 ~~~\n"
GFM = MarkdownIt("commonmark").enable("table")


def report(notes: int, sample: str = HOSTILE_SAMPLE) -> str:
    return check_output.session_summary_markdown(
        profile="ci", start=40, end=80, val_before=2.7, val_after=2.1, unigram=2.9, bpb_before=3.9, bpb_after=3.1,
        unigram_bpb=4.2, elapsed_s=4000, tokens_per_s=11804, resumed_from="ckpt_a", checkpoint_id="ckpt_b",
        commit_oid="c" * 40, commit_url="https://github.com/octo/demo/commit/" + "c" * 40,
        notes=tuple(f"note {n}: " + "x" * 90 for n in range(notes)), best_bpb=3.1, stopped="time limit",
        progress_url="https://github.com/octo/demo/tree/ccc/.training-progress/run",
        chart_url="https://github.com/octo/demo/raw/ccc/.training-progress/run/loss.svg", sample=sample,
    )


def test_the_report_renders_into_tables_one_fence_and_the_closing_line() -> None:
    tokens = GFM.parse(report(notes=3))
    assert sum(t.type == "table_open" for t in tokens) == 2
    [fence] = [t for t in tokens if t.type == "fence"]
    assert fence.content == HOSTILE_SAMPLE.replace("\x1b", "\ufffd").replace("\x07", "\ufffd")
    assert "\x1b" not in report(notes=0)
    after = tokens[tokens.index(fence) + 1:]
    assert any(t.type == "inline" and t.content.startswith("Checkpoint `ckpt_b`") for t in after)
    cells = [t.content for t in tokens if t.type == "inline"]
    for row in ("tokens/s", "duration", "stopped", "best so far on this validation set (bits per byte)"):
        assert row in cells, (row, cells)
    assert "1 h 6 min" in cells and "at its time limit" in cells
    images = [c for t in tokens if t.children for c in t.children if c.type == "image"]
    assert [i.attrs["src"] for i in images] == ["https://github.com/octo/demo/raw/ccc/.training-progress/run/loss.svg"]


def test_a_flood_of_notes_still_arrives_within_githubs_limits(github, settings) -> None:
    emu, _ = github
    origin = Origin(repo=REPO, installation_id=INSTALLATION_ID, trigger="issue_comment", sender="alice",
                    issue_number=7, line="/retrain")
    summary = report(notes=2_000)  # about 200,000 characters
    body = replies.finished(origin, summary)
    assert len(body) > 3 * MAX_COMMENT_CHARS

    async def go() -> None:
        async with installation_client(settings, INSTALLATION_ID) as gh:
            emu.open_issue(REPO, 7)
            made = await gh.create_comment(REPO, 7, "queued")
            await gh.update_comment(REPO, int(made["id"]), body)
            check = await gh.create_check_run(REPO, name="Retrain (ci)", head_sha=emu.head(REPO),
                                              external_id="retrain:ci:" + "d" * 32, status="in_progress")
            await gh.update_check_run(REPO, check.id, status="completed", conclusion="success",
                                      output=check_output.finished_output(summary, title="t", chart_url=None))

    asyncio.run(go())
    assert emu.violations == []
    [reply] = emu.comments(REPO, 7)
    assert len(reply["body"]) <= MAX_COMMENT_CHARS
    [check] = emu.check_runs(REPO)
    assert len(check["output"]["summary"].encode()) <= MAX_CHECK_TEXT_BYTES
    for text in (reply["body"], check["output"]["summary"]):
        tokens = GFM.parse(text)
        assert sum(t.type == "table_open" for t in tokens) == 2  # the cut falls in the notes, after the tables
        [fence] = [t for t in tokens if t.type == "fence"]
        assert "breaks" in fence.content
