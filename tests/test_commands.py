"""Slash-command parsing, table-driven as Prow's plugin tests are."""

import pytest

from app.commands import COMMANDS, HelpCommand, InvalidCommand, TrainCommand, find_command, help_text, parse_command

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


def test_help_lists_every_command_and_the_profiles() -> None:
    text = help_text(["ci", "nightly"])
    assert all(c.usage in text for c in COMMANDS)
    assert "`nightly`" in text
