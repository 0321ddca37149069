"""`loss.svg`: training and validation bits per byte across sessions, drawn as plain SVG (renders on GitHub,
no plotting library in the worker). Pure: history in, SVG text out."""

from __future__ import annotations

import math
from html import escape
from typing import Any

from workers.trainer.data import bits_per_byte

WIDTH, HEIGHT = 720, 360
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 36, 48


Points = list[tuple[float, float]]


def _points(history: list[dict[str, Any]]) -> tuple[list[Points], Points]:
    """One training curve per session (a fresh start begins again at 0), and each session's val figure,
    in bits per byte (lines written before bpb was recorded are converted: their tokenizer was bytes)."""
    curves: list[Points] = []
    val: Points = []
    for session in history:
        curve = [
            (float(pair[0]), bits_per_byte(float(pair[1])))
            for pair in session.get("train_loss_curve") or []
            if isinstance(pair, list | tuple) and len(pair) == 2 and math.isfinite(float(pair[1]))
        ]
        if curve:
            curves.append(curve)
        bpb, loss, end = session.get("val_bpb_after"), session.get("val_loss_after"), session.get("end_iteration")
        if not isinstance(bpb, int | float) and isinstance(loss, int | float):
            bpb = bits_per_byte(loss)
        if isinstance(bpb, int | float) and isinstance(end, int | float) and math.isfinite(bpb):
            val.append((float(end), float(bpb)))
    return curves, val


def render_svg(history: list[dict[str, Any]], title: str) -> str:
    curves, val = _points(history)
    every = [p for curve in curves for p in curve] + val
    xs = [x for x, _ in every] or [0.0, 1.0]
    ys = [y for _, y in every] or [0.0, 1.0]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = 0.0, max(ys) * 1.05 if max(ys) > 0 else 1.0

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT)

    def sy(y: float) -> float:
        return HEIGHT - BOTTOM - (y - y0) / (y1 - y0) * (HEIGHT - TOP - BOTTOM)

    def polyline(points: list[tuple[float, float]], colour: str, width: float) -> str:
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(points))
        return f'<polyline fill="none" stroke="{colour}" stroke-width="{width}" points="{coords}"/>'

    ticks = []
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        ticks.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#eee"/>'
            f'<text x="{LEFT - 8}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.2f}</text>'
        )
    dots = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="#d9480f"/>' for x, y in val)
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        'font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{LEFT}" y="22" font-size="14" font-weight="bold">{escape(title)}</text>',
        *ticks,
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 14}" text-anchor="end">iteration {x0:.0f} – {x1:.0f}</text>',
        *(polyline(curve, "#1c7ed6", 1.5) for curve in curves),
        polyline(val, "#d9480f", 2) if len(val) > 1 else "",
        dots,
        f'<text x="{WIDTH - RIGHT}" y="22" text-anchor="end"><tspan fill="#1c7ed6">training</tspan> · '
        f'<tspan fill="#d9480f">validation per session</tspan> (bits per byte)</text>',
        "</svg>",
        "",
    ])
