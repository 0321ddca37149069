"""Slash-command parsing, table-driven as Prow's plugin tests are."""

import pytest

from app.features.commands import (
    COMMANDS,
    MAX_PROMPT_CHARS,
    HelpCommand,
    HistoryCommand,
    InvalidCommand,
    SampleCommand,
    TrainCommand,
    find_command,
    help_text,
    parse_command,
)

CASES = [
    ("/retrain", TrainCommand("/retrain")),
    ("/retrain ci", TrainCommand("/retrain ci", profile="ci")),
    ("please\n/retrain scheduled\nthanks", TrainCommand("/retrain scheduled", profile="scheduled")),
    ("/retrain full max_iters=20", TrainCommand("/retrain full max_iters=20", profile="full", max_iters=20)),
    ("/retrain   ", TrainCommand("/retrain")),
    ("> /retrain ci", None),  # quoting someone's command never runs it again
    ("```\n/retrain ci\n```", None),
    ("~~~\n/retrain\n~~~\n/retrain full", TrainCommand("/retrain full", profile="full")),
    ("please /retrain ci", None),  # line-anchored
    ("/retraining", None),
    ("/retrain-ci", None),
    ("/retrain help", HelpCommand("/retrain help")),
    ("/retrain ci fresh=confirm", TrainCommand("/retrain ci fresh=confirm", profile="ci", fresh=True)),
    ("", None),
    ("/retrain history", HistoryCommand("/retrain history")),
    ("/retrain sample", SampleCommand("/retrain sample")),
    ("/retrain sample Once upon a time", SampleCommand("/retrain sample Once upon a time", prompt="Once upon a time")),
    # the prompt is the rest of the line as typed: inner spacing, `=` and command words stay in it
    ("/retrain sample  a  b=c help", SampleCommand("/retrain sample  a  b=c help", prompt="a  b=c help")),
    ("/retrain sample profile=full The echo", SampleCommand("/retrain sample profile=full The echo",
                                                            prompt="The echo", profile="full")),
    ("/retrain sample profile=full", SampleCommand("/retrain sample profile=full", profile="full")),
    ("/retrain sample a profile=full", SampleCommand("/retrain sample a profile=full", prompt="a profile=full")),
    ("/retrain sample ```x```\nmore", SampleCommand("/retrain sample ```x```", prompt="```x```")),  # one line
    ("> /retrain sample quoted", None),
    ("/retrain samples", TrainCommand("/retrain samples", profile="samples")),  # a profile name, as before
]


@pytest.mark.parametrize(("body", "expected"), CASES)
def test_find_command(body: str, expected: object) -> None:
    assert find_command(body) == expected


@pytest.mark.parametrize(
    ("body", "reason_part"),
    [
        ("/retrain ci full", "more than one profile"),
        ("/retrain ci foo=bar", "unknown argument `foo=bar`"),
        ("/retrain max_iters=0", "at least 1"),
        ("/retrain ci fresh", "must be confirmed"),
        ("/retrain ci help", "unknown argument `help`"),
        ("/retrain history ci", "unknown argument `history`"),
        ("/retrain sample " + "x" * (MAX_PROMPT_CHARS + 1), f"at most {MAX_PROMPT_CHARS}"),
    ],
)
def test_invalid_commands_say_why(body: str, reason_part: str) -> None:
    parsed = find_command(body)
    assert isinstance(parsed, InvalidCommand)
    assert reason_part in parsed.reason
    assert parsed.line == body


def test_every_documented_example_parses_as_documented() -> None:
    """Prow never checks its usage strings; we do."""
    for command in COMMANDS:
        for example in command.examples:
            parsed = parse_command(example)
            assert parsed is not None and not isinstance(parsed, InvalidCommand), example
            assert isinstance(parsed, HelpCommand) == command.usage.endswith("help"), example


def test_a_prompt_of_the_longest_length_is_taken() -> None:
    parsed = parse_command("/retrain sample " + "é" * MAX_PROMPT_CHARS)
    assert isinstance(parsed, SampleCommand) and len(parsed.prompt) == MAX_PROMPT_CHARS


def test_help_lists_every_command_and_the_profiles() -> None:
    text = help_text(["ci", "nightly"])
    assert all(c.usage in text for c in COMMANDS)
    assert "/retrain history" in text and "/retrain sample [profile=NAME] [prompt]" in text
    assert "`nightly`" in text
