"""`/retrain history`: the rows read from history.jsonl and commit messages (pure), the table the reply holds,
and the whole command against the emulator (its GraphQL checked against GitHub's schema)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from app.features.decisions import Origin
from app.github.client import PATH_COMMITS_QUERY
from app.github.text_limits import MAX_COMMENT_CHARS
from app.writing import replies
from tests.conftest import INSTALLATION_ID, REPO
from tests.emulator.harness import Env
from tests.emulator.harness import env as env  # the module-scoped emulator fixture
from tests.payloads import comment_event
from workers.jobs.events import handle_event
from workers.jobs.history import (
    SessionCommit,
    commit_index,
    history_rows,
    run_rows,
    table_rows,
    tail_lines,
)

ORIGIN = Origin(repo=REPO, installation_id=1, trigger="issue_comment", sender="alice", issue_number=7,
                line="/retrain history")
OID = "a" * 40


def line(session: str, *, after: float, at: str, start: int = 0, end: int = 40, profile: str = "ci",
         trigger: str = "issue_comment", before: float = 8.0) -> dict[str, Any]:
    return {"session": session, "profile": profile, "trigger": trigger, "finished_at": at, "start_iteration": start,
            "end_iteration": end, "val_bpb_before": before, "val_bpb_after": after}


def message(session: str, sender: str | None = "alice") -> str:
    by = f" by @{sender}" if sender else ""
    return f"retrain(ci): +40 iters\n\nTrigger: issue_comment{by}\nCheckpoint: ckpt_x\nSession: {session}"


def test_a_run_marks_each_new_best_and_finds_each_sessions_commit() -> None:
    lines = [line("s1", after=3.0, at="2026-01-01T10:00:00+00:00"),
             line("s2", after=3.5, at="2026-01-02T10:00:00+00:00"),
             line("s3", after=2.5, at="2026-01-03T10:00:00+00:00")]
    commits = commit_index([("c" * 40, message("s3", "bob")), ("b" * 40, message("s1")), ("not-an-oid", message("s2"))])
    rows = run_rows(lines, commits)
    assert [r.best_so_far for r in rows] == [True, False, True]
    assert [(r.commit, r.sender) for r in rows] == [("b" * 40, "alice"), (None, None), ("c" * 40, "bob")]


def test_the_last_ten_across_runs_newest_first() -> None:
    ci = [line(f"c{i}", after=3 - i / 10, at=f"2026-01-{i + 1:02d}T00:00:00+00:00") for i in range(8)]
    full = [line(f"f{i}", after=2.0, at=f"2026-01-{i + 1:02d}T12:00:00+00:00", profile="full") for i in range(8)]
    found = history_rows({"run-ci": (ci, {}), "run-full": (full, {}), "run-none": ([], {})})
    assert found.total == 16 and found.runs == ("run-ci", "run-full") and len(found.rows) == 10
    assert [r.finished_at for r in found.rows] == sorted((r.finished_at for r in found.rows), reverse=True)
    assert found.rows[0].profile == "full" and found.rows[0].finished_at == datetime(2026, 1, 8, 12, tzinfo=UTC)


def test_what_a_repository_wrote_in_a_wrong_shape_shows_as_a_question_mark() -> None:
    hostile = {"session": "s", "profile": "ci | <b>x</b>", "trigger": "`@everyone`\n| x |", "finished_at": "soon",
               "start_iteration": True, "end_iteration": -1, "val_bpb_before": float("nan"), "val_bpb_after": "1.0",
               "tokenizer": "bpe-v1:4096:`x`", "moved_from_tokenizer": "bytes-v1 | x"}
    commits = commit_index([(OID, "Trigger: x by @`evil`|\nSession: s")])
    [row] = table_rows(history_rows({"r": ([hostile], commits)}), "https://github.com/o/r/commit/")
    assert row == {"when": "?", "profile": "?", "iterations": "? → ?", "val": "? → ?", "best": "", "tokenizer": "?",
                   "by": "?", "commit": f"[`aaaaaaa`](https://github.com/o/r/commit/{OID})"}


def test_the_table_names_senders_without_notifying_them() -> None:
    moved = {**line("s1", after=3.25, at="2026-01-01T10:00:00Z", before=5.5),
             "tokenizer": "bpe-v1:4096:0123456789abcdef", "moved_from_tokenizer": "bytes-v1"}
    found = history_rows({"r": ([moved], {"s1": SessionCommit(OID, "alice")})})
    body = replies.history(ORIGIN, table_rows(found, "https://github.com/octo/demo/commit/"), found.total,
                           list(found.runs))
    header, rule, row = body.split("\n\n", 2)[-1].splitlines()
    assert header.count("|") == rule.count("|") == row.count("|") == 9
    assert row == (f"| 2026-01-01 10:00 | `ci` | 0 → 40 | 5.5000 → 3.2500 | ★ | `bpe-4096` (moved from `bytes`) | "
                   "issue_comment (alice) | "
                   f"[`aaaaaaa`](https://github.com/octo/demo/commit/{OID}) |")
    assert body.count("@") == 1  # the requester, not the sender in the table
    assert "all 1 training session(s)" in body and "`r`" in body


def test_no_sessions_yet_is_said_plainly() -> None:
    assert "no training session of this repository has been committed yet" in replies.history(ORIGIN, [], 0, [])


def test_an_oversized_history_is_read_from_its_end() -> None:
    raw = b"".join(json.dumps({"session": str(i)}).encode() + b"\n" for i in range(1000))
    tail = tail_lines(raw, limit=100)
    assert len(tail) <= 100 and tail.startswith(b'{"session"') and tail.endswith(b'{"session": "999"}\n')
    assert tail_lines(raw) is raw and tail_lines(None) is None


def test_history_against_the_emulator_links_each_sessions_commit(github, settings) -> None:
    emu, _ = github
    run_dir = ".training-progress/nanecho-cached-ci"
    first = line("s1", after=3.0, at="2026-01-01T10:00:00+00:00")
    c1 = emu.commit_files(REPO, {f"{run_dir}/history.jsonl": json.dumps(first).encode() + b"\n"},
                          message=message("s1"))
    emu.commit_files(REPO, {"README.md": b"an unrelated change\n"}, message="docs")
    second = line("s2", after=2.0, at="2026-01-02T10:00:00+00:00", start=40, end=80)
    history = (json.dumps(first) + "\n" + json.dumps(second) + "\n").encode()
    c2 = emu.commit_files(REPO, {f"{run_dir}/history.jsonl": history}, message=message("s2", sender=None))
    payload = comment_event("/retrain history", sender="bob", repo=REPO, installation_id=INSTALLATION_ID,
                            comment_id=88, github=emu)
    outcome = asyncio.run(handle_event(settings, "issue_comment", "delivery-h", payload, lambda m: None))
    assert outcome == "answered: history"
    [reply] = emu.comments(REPO, 7)
    rows = [r for r in reply["body"].splitlines() if r.startswith("| 2026")]
    assert len(rows) == 2 and "40 → 80" in rows[0] and "0 → 40" in rows[1]  # anyone may read it: bob too
    assert c2[:7] in rows[0] and c1 in rows[1] and "(alice)" in rows[1]
    assert len(reply["body"]) <= MAX_COMMENT_CHARS
    assert emu.violations == []


def test_the_emulators_commit_history_lists_only_the_paths_commits_and_keeps_githubs_page_limit(env: Env) -> None:
    touched = env.emu.commit_files("octo/demo", {"runs/h.jsonl": b"1\n"}, message="first")
    env.emu.commit_files("octo/demo", {"other.txt": b"x"}, message="elsewhere")
    again = env.emu.commit_files("octo/demo", {"runs/h.jsonl": b"1\n2\n"}, message="second")
    out = env.gql(PATH_COMMITS_QUERY, owner="octo", name="demo", qualifiedName="refs/heads/main", path="runs/h.jsonl",
                  first=100)
    repo = out["data"]["repository"]
    nodes = repo["ref"]["target"]["history"]["nodes"]
    assert [(n["oid"], n["message"]) for n in nodes] == [(again, "second"), (touched, "first")]
    assert repo["defaultBranchRef"] == repo["ref"]
    before = len(env.emu.violations)
    over = env.gql(PATH_COMMITS_QUERY, owner="octo", name="demo", qualifiedName="refs/heads/main", path="x", first=101)
    assert over["errors"][0]["type"] == "EXCESSIVE_PAGINATION"
    del env.emu.violations[before:]
