"""Slash-command parsing, table-driven as Prow's plugin tests are."""

import pytest

from app.commands import InvalidCommand, TrainCommand, find_command

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
    ],
)
def test_invalid_commands_say_why(body: str, reason_part: str) -> None:
    parsed = find_command(body)
    assert isinstance(parsed, InvalidCommand)
    assert reason_part in parsed.reason
    assert parsed.line == body
