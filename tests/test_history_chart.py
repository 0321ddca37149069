"""history.jsonl and loss.svg: append-only history, and a chart that is valid SVG whatever the history."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from workers.session.history import appended, downsample, parse_history
from workers.session.loss_chart import render_svg


def test_downsample_keeps_means_and_end_iterations() -> None:
    assert downsample([4.0, 2.0, 3.0, 1.0], 10, points=2) == [[12, 3.0], [14, 2.0]]
    assert downsample([], 0) == []
    assert len(downsample([1.0] * 1000, 0)) == 50


def test_history_appends_and_skips_garbage_lines() -> None:
    raw = appended(b'{"session": "a"}\nnot json\n[1]', {"session": "b"})
    assert [s["session"] for s in parse_history(raw)] == ["a", "b"]
    assert appended(None, {"x": 1}) == b'{"x": 1}\n'


def test_chart_is_valid_svg_for_real_and_degenerate_histories() -> None:
    sessions = [
        {"end_iteration": 40, "val_loss_after": 2.5, "train_loss_curve": [[20, 3.5], [40, 2.6]]},
        {"end_iteration": 80, "val_loss_after": 2.0, "train_loss_curve": [[60, 2.4], [80, 2.1]]},
        {"end_iteration": 30, "val_loss_after": 2.9, "train_loss_curve": [[30, 3.0]]},  # a fresh start
    ]
    for history in (sessions, [], [{"val_loss_after": "nan?"}], [{"end_iteration": 5, "val_loss_after": float("nan")}]):
        root = ET.fromstring(render_svg(history, "run <ci> & co"))
        assert root.tag.endswith("svg")
    svg = render_svg(sessions, "r")
    assert svg.count("<polyline") == 4  # one training curve per session, one validation line
    assert svg.count("<circle") == 3
