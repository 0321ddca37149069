"""`/retrain history`: the repository's last sessions across its runs, read from the progress files it holds
(`<progress_dir>/<run>/history.jsonl`) and the commits that wrote them. Runs on the events worker: no torch.

Everything here comes from the repository, which anyone with write access edits: a value is shown only when
it has the shape a session writes (a number, a short word, a login, an ISO time), so no text of theirs reaches
the reply's Markdown. The pure part (`history_rows`, `commit_index`) is apart from the reads (`read_history`).
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.config.repo_config import RepoConfig
from app.github.client import GitHubClient
from workers.session.history import parse_history

SHOWN = 10  # the last sessions across runs a reply lists
MAX_HISTORY_BYTES = 4 * 2**20  # of a run's history.jsonl, its end: a line is ~2 KB, so thousands of sessions
READS_AT_ONCE = 8
WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,79}$")
LOGIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:\[bot\])?$")
OID = re.compile(r"^[0-9a-f]{40}$")
SESSION_LINE = re.compile(r"^Session: (?P<id>\S+)$", re.MULTILINE)
TRIGGER_LINE = re.compile(r"^Trigger: \S+ by @(?P<login>\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class SessionCommit:
    oid: str
    sender: str | None


@dataclass(frozen=True)
class HistoryRow:
    """One session as the reply shows it; None where the file held nothing of the right shape."""

    finished_at: datetime | None
    profile: str | None
    start_iteration: int | None
    end_iteration: int | None
    val_bpb_before: float | None
    val_bpb_after: float | None
    best_so_far: bool  # the lowest val bits per byte of its run up to then
    trigger: str | None
    sender: str | None
    commit: str | None  # the progress commit's oid
    tokenizer: str | None = None  # short: `bytes`, `bpe-4096`
    moved_from: str | None = None  # the tokenizer this session moved its lineage from (workers/session/migration.py)


@dataclass(frozen=True)
class History:
    rows: tuple[HistoryRow, ...]  # newest first, at most SHOWN
    total: int  # sessions recorded across the runs read
    runs: tuple[str, ...]  # the runs that have any


def _word(value: Any) -> str | None:
    return value if isinstance(value, str) and WORD.match(value) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**12 else None


def _float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and abs(value) < 1e6:
        return float(value)
    return None


def _tokenizer(value: Any) -> str | None:
    """`bytes-v1` → `bytes`, `bpe-v1:4096:<hash>` → `bpe-4096`; None for anything else."""
    word = _word(value)
    if word is None:
        return None
    if word == "bytes-v1":
        return "bytes"
    found = re.fullmatch(r"bpe-v1:(\d{3,5}):[0-9a-f]{16}", word)
    return f"bpe-{found[1]}" if found else None


def _time(value: Any) -> datetime | None:
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) and len(value) <= 40 else None
    except ValueError:
        return None
    if when is None:
        return None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def commit_index(commits: list[tuple[str, str]]) -> dict[str, SessionCommit]:
    """Session id → the commit whose message names it (`Session: <id>`, as workers.session.progress writes),
    the oldest such commit when several do."""
    index: dict[str, SessionCommit] = {}
    for oid, message in commits:  # newest first: an older commit naming the same session wins
        session = SESSION_LINE.search(message)
        if session is None or not OID.match(oid):
            continue
        trigger = TRIGGER_LINE.search(message)
        login = trigger["login"] if trigger and LOGIN.match(trigger["login"]) else None
        index[session["id"]] = SessionCommit(oid, login)
    return index


def run_rows(lines: list[dict[str, Any]], commits: dict[str, SessionCommit]) -> list[HistoryRow]:
    """A run's sessions in the order its history.jsonl holds them, with the running best marked."""
    rows, best = [], math.inf
    for line in lines:
        after = _float(line.get("val_bpb_after"))
        new_best = after is not None and after < best
        best = after if new_best and after is not None else best
        session = line.get("session")
        found = commits.get(session) if isinstance(session, str) else None
        rows.append(HistoryRow(
            finished_at=_time(line.get("finished_at")), profile=_word(line.get("profile")),
            start_iteration=_int(line.get("start_iteration")), end_iteration=_int(line.get("end_iteration")),
            val_bpb_before=_float(line.get("val_bpb_before")), val_bpb_after=after, best_so_far=new_best,
            trigger=_word(line.get("trigger")), sender=found.sender if found else None,
            commit=found.oid if found else None, tokenizer=_tokenizer(line.get("tokenizer")),
            moved_from=_tokenizer(line.get("moved_from_tokenizer")),
        ))
    return rows


def history_rows(runs: dict[str, tuple[list[dict[str, Any]], dict[str, SessionCommit]]], shown: int = SHOWN
                 ) -> History:
    """The last `shown` sessions across runs, newest first (by when they finished; undated ones oldest)."""
    every = [row for lines, commits in runs.values() for row in run_rows(lines, commits)]
    oldest = datetime.min.replace(tzinfo=UTC)
    ordered = sorted(every, key=lambda r: r.finished_at or oldest, reverse=True)
    return History(tuple(ordered[:shown]), len(every), tuple(run for run, (lines, _) in runs.items() if lines))


def tail_lines(raw: bytes | None, limit: int = MAX_HISTORY_BYTES) -> bytes | None:
    """The end of a history file, from a line's start: an oversized file costs no more than this to parse."""
    if raw is None or len(raw) <= limit:
        return raw
    tail = raw[-limit:]
    return tail[tail.find(b"\n") + 1:]


async def read_history(gh: GitHubClient, repo: str, config: RepoConfig, branch: str | None) -> History:
    """Every profile's run at the branch head (the config's branch, else `branch`, else the default)."""
    where = config.branch or branch
    head = await gh.branch_head(repo, where)
    limit = asyncio.Semaphore(READS_AT_ONCE)

    async def one(run: str) -> tuple[list[dict[str, Any]], dict[str, SessionCommit]]:
        path = f"{config.progress_dir}/{run}/history.jsonl"
        async with limit:
            lines = parse_history(tail_lines(await gh.read_file(repo, path, head.oid)))
            commits = commit_index(await gh.path_commits(repo, head.name, path)) if lines else {}
        return lines, commits

    runs = sorted({config.run_name(p) for p in config.profiles})
    found = await asyncio.gather(*(one(run) for run in runs))
    return history_rows(dict(zip(runs, found, strict=True)))


def table_rows(history: History, commit_url: str) -> list[dict[str, str]]:
    """The rows as reply cells (app.writing.replies.history); `commit_url` is `{web_url}/{owner}/{repo}/commit/`.
    Senders are named without an @, so a table of old sessions notifies nobody."""
    def num(value: float | None) -> str:
        return "?" if value is None else f"{value:.4f}"

    def count(value: int | None) -> str:
        return "?" if value is None else f"{value:,}"

    return [{
        "when": f"{r.finished_at:%Y-%m-%d %H:%M}" if r.finished_at else "?",
        "profile": f"`{r.profile}`" if r.profile else "?",
        "iterations": f"{count(r.start_iteration)} → {count(r.end_iteration)}",
        "val": f"{num(r.val_bpb_before)} → {num(r.val_bpb_after)}",
        "tokenizer": (f"`{r.tokenizer}`" if r.tokenizer else "?") + (f" (moved from `{r.moved_from}`)"
                                                                    if r.moved_from else ""),
        "best": "★" if r.best_so_far else "",
        "by": (r.trigger or "?") + (f" ({r.sender})" if r.sender else ""),
        "commit": f"[`{r.commit[:7]}`]({commit_url}{r.commit})" if r.commit else "?",
    } for r in history.rows]
