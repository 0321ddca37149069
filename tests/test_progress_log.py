"""Progress of local sessions: a bar at a terminal, throttled lines elsewhere."""

from __future__ import annotations

import pytest

from workers.session.progress_log import ProgressBar, ProgressLogger, local_progress
from workers.trainer.train import Progress


def reports(n: int = 100) -> list[Progress]:
    return [Progress(1000 + i, i, n, 2.0 / i, 1e-3, 5000.0, i / 10) for i in range(10, n + 1, 10)]


def test_the_bar_ends_full_with_loss_and_speed(capsys: pytest.CaptureFixture[str]) -> None:
    bar = ProgressBar("abcdef123456")
    for p in reports():
        bar(p)
    err = capsys.readouterr().err
    assert "session abcdef12" in err and "100/100" in err and "loss 0.0200" in err and "5,000 tok/s" in err


def test_lines_when_not_at_a_terminal() -> None:
    said: list[str] = []
    progress = local_progress(said.append, "abcdef123456")  # pytest's stderr is not a terminal
    assert isinstance(progress, ProgressLogger)
    for p in reports():
        progress(p)
    assert said[0].startswith("[abcdef12] iter 1010 (10/100)") and "(100/100)" in said[-1]
