"""Slash-command parsing: pure functions from a comment body to what was asked.

Prow style: a command is a line of its own that starts with `/retrain`; fenced code blocks and `>` quotes
are ignored so that quoting someone's command never runs it again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COMMAND_LINE = re.compile(r"^/retrain(?:[ \t]+(?P<args>.*))?$")
FENCE = re.compile(r"^\s*(```|~~~)")
MAX_ITERS_ARG = re.compile(r"^max_iters=(?P<n>\d+)$")
USAGE = "/retrain [profile] [max_iters=N]"


@dataclass(frozen=True)
class TrainCommand:
    """`/retrain [profile] [max_iters=N]` as typed by a person."""

    line: str
    profile: str | None = None
    max_iters: int | None = None


@dataclass(frozen=True)
class InvalidCommand:
    """A `/retrain` line that could not be understood; `reason` is shown to the person."""

    line: str
    reason: str


ParsedCommand = TrainCommand | InvalidCommand


def visible_lines(body: str) -> list[str]:
    """The comment's lines outside fenced code blocks and block quotes."""
    lines: list[str] = []
    in_fence = False
    for line in body.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence or line.lstrip().startswith(">"):
            continue
        lines.append(line.rstrip())
    return lines


def parse_command(line: str) -> ParsedCommand | None:
    """One line → the command it holds, or None when it is not a `/retrain` line."""
    match = COMMAND_LINE.match(line)
    if match is None:
        return None
    profile: str | None = None
    max_iters: int | None = None
    for arg in (match["args"] or "").split():
        iters = MAX_ITERS_ARG.match(arg)
        if iters is not None:
            max_iters = int(iters["n"])
            if max_iters < 1:
                return InvalidCommand(line, "max_iters must be at least 1")
        elif "=" in arg:
            return InvalidCommand(line, f"unknown argument `{arg}`; usage: `{USAGE}`")
        elif profile is None:
            profile = arg
        else:
            return InvalidCommand(line, f"more than one profile given (`{profile}`, `{arg}`); usage: `{USAGE}`")
    return TrainCommand(line=line, profile=profile, max_iters=max_iters)


def find_command(body: str) -> ParsedCommand | None:
    """The first `/retrain` command in a comment body; one comment starts at most one session."""
    for line in visible_lines(body):
        parsed = parse_command(line)
        if parsed is not None:
            return parsed
    return None
