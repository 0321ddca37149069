"""Slash commands: one registry of definitions, from which both parsing and `/retrain help` come.

Prow style: a command is a line of its own that starts with `/retrain`; fenced code blocks and `>` quotes
are ignored so that quoting someone's command never runs it again. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COMMAND_LINE = re.compile(r"^/retrain(?:[ \t]+(?P<args>.*))?$")
FENCE = re.compile(r"^\s*(```|~~~)")
MAX_ITERS_ARG = re.compile(r"^max_iters=(?P<n>\d{1,9})$")
FRESH_CONFIRM = "fresh=confirm"
APPROVE_USAGE = "/retrain ok-to-test [sha]"
COMMIT_PREFIX = re.compile(r"^[0-9a-fA-F]{7,40}$")
SAMPLE_LINE = re.compile(r"^/retrain[ \t]+sample(?:[ \t]+(?P<rest>.*))?$")
SAMPLE_PROFILE = re.compile(r"^profile=(?P<name>[A-Za-z0-9_-]{1,40})(?:[ \t]+|$)")
MAX_PROMPT_CHARS = 500  # a prompt is a line of a comment; the model sees at most its block size of it anyway


@dataclass(frozen=True)
class CommandHelp:
    usage: str
    description: str
    examples: tuple[str, ...]


COMMANDS: tuple[CommandHelp, ...] = (
    CommandHelp(
        "/retrain [profile] [max_iters=N] [fresh=confirm]",
        "Start a training session that resumes from the best checkpoint. `profile` is one of the repository's "
        "profiles (default `ci`); `max_iters` sets this session's iterations; `fresh=confirm` starts a new "
        "model instead (earlier checkpoints are kept).",
        ("/retrain", "/retrain ci", "/retrain scheduled max_iters=200", "/retrain full fresh=confirm"),
    ),
    CommandHelp("/retrain status", "List this repository's queued and running sessions.", ("/retrain status",)),
    CommandHelp(
        "/retrain cancel",
        "Stop this repository's queued and running sessions; a running one commits what it has trained.",
        ("/retrain cancel",),
    ),
    CommandHelp(
        "/retrain history",
        "Show the repository's last training sessions across its runs: iterations, validation bits per byte "
        "before and after, and the commit each one made.",
        ("/retrain history",),
    ),
    CommandHelp(
        "/retrain sample [profile=NAME] [prompt]",
        "Reply with text the profile's best checkpoint (default `ci`) writes after the prompt (the rest of the "
        f"line, at most {MAX_PROMPT_CHARS} characters; default: a new line). Needs the same permission as "
        "training; a few samples per hour per repository.",
        ("/retrain sample", "/retrain sample Once upon a time", "/retrain sample profile=full The echo"),
    ),
    CommandHelp(
        APPROVE_USAGE,
        "On a pull request from a fork: approve its head commit and start its session (with the default "
        "branch's config). Naming the commit (7 or more hex digits) approves that one only, so a push made "
        "meanwhile is not; a new push needs a new approval. Needs the configured permission.",
        ("/retrain ok-to-test", "/retrain ok-to-test 1a2b3c4"),
    ),
    CommandHelp("/retrain help", "Show this help.", ("/retrain help",)),
)


@dataclass(frozen=True)
class TrainCommand:
    line: str
    profile: str | None = None
    max_iters: int | None = None
    fresh: bool = False


@dataclass(frozen=True)
class HelpCommand:
    line: str


@dataclass(frozen=True)
class StatusCommand:
    line: str


@dataclass(frozen=True)
class CancelCommand:
    line: str


@dataclass(frozen=True)
class ApproveCommand:
    """`/retrain ok-to-test [sha]`: Prow's pattern for running what a fork's author wrote. With `sha`, only
    that head is approved: a push landing between the comment and its handling is not."""

    line: str
    sha: str | None = None


@dataclass(frozen=True)
class HistoryCommand:
    line: str


@dataclass(frozen=True)
class SampleCommand:
    """`prompt` is the commenter's text, untrusted: bounded here, fenced in the reply."""

    line: str
    prompt: str = ""
    profile: str | None = None


@dataclass(frozen=True)
class InvalidCommand:
    """A `/retrain` line that could not be understood; `reason` is shown to the person."""

    line: str
    reason: str


ParsedCommand = (
    TrainCommand | HelpCommand | StatusCommand | CancelCommand | HistoryCommand | SampleCommand | ApproveCommand
    | InvalidCommand
)
WORD_COMMANDS: dict[str, type[HelpCommand | StatusCommand | CancelCommand | HistoryCommand | ApproveCommand]] = {
    "help": HelpCommand, "status": StatusCommand, "cancel": CancelCommand, "history": HistoryCommand,
    "ok-to-test": ApproveCommand,
}


def help_text(profiles: list[str] | None = None) -> str:
    """Markdown for `/retrain help`, rendered from the same definitions the parser follows."""
    rows = "\n".join(f"| `{c.usage}` | {c.description} | {', '.join(f'`{e}`' for e in c.examples)} |" for c in COMMANDS)
    known = f"\n\nProfiles in this repository: {', '.join(f'`{p}`' for p in profiles)}." if profiles else ""
    return f"| command | what it does | examples |\n|---|---|---|\n{rows}{known}"


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
    args = (match["args"] or "").split()
    if args[:1] == ["sample"]:
        return parse_sample(line)
    if args[:1] == ["ok-to-test"] and len(args) == 2:
        if not COMMIT_PREFIX.match(args[1]):
            return InvalidCommand(line, f"`{args[1][:40]}` is not a commit id; usage: `{APPROVE_USAGE}`")
        return ApproveCommand(line, args[1].lower())
    if len(args) == 1 and args[0] in WORD_COMMANDS:
        return WORD_COMMANDS[args[0]](line)
    usage = f"usage: `{COMMANDS[0].usage}`"
    profile: str | None = None
    max_iters: int | None = None
    fresh = False
    for arg in args:
        iters = MAX_ITERS_ARG.match(arg)
        if iters is not None:
            max_iters = int(iters["n"])
            if max_iters < 1:
                return InvalidCommand(line, "max_iters must be at least 1")
        elif arg == FRESH_CONFIRM:
            fresh = True
        elif arg == "fresh":
            return InvalidCommand(line, f"a fresh start must be confirmed: write `{FRESH_CONFIRM}`")
        elif "=" in arg or arg in WORD_COMMANDS:
            return InvalidCommand(line, f"unknown argument `{arg}`; {usage}")
        elif profile is None:
            profile = arg
        else:
            return InvalidCommand(line, f"more than one profile given (`{profile}`, `{arg}`); {usage}")
    return TrainCommand(line=line, profile=profile, max_iters=max_iters, fresh=fresh)


def parse_sample(line: str) -> SampleCommand | InvalidCommand:
    """`/retrain sample [profile=NAME] [prompt]`: the prompt is the rest of the line, as typed."""
    match = SAMPLE_LINE.match(line)
    rest = (match["rest"] if match else "") or ""
    profile = SAMPLE_PROFILE.match(rest)
    if profile is not None:
        rest = rest[profile.end():]
    prompt = rest.strip()
    if len(prompt) > MAX_PROMPT_CHARS:
        return InvalidCommand(line, f"the prompt is {len(prompt):,} characters; a sample's prompt is at most "
                                    f"{MAX_PROMPT_CHARS}")
    return SampleCommand(line, prompt=prompt, profile=profile["name"] if profile else None)


def find_command(body: str) -> ParsedCommand | None:
    """The first `/retrain` command in a comment body; one comment starts at most one session."""
    for line in visible_lines(body):
        parsed = parse_command(line)
        if parsed is not None:
            return parsed
    return None
