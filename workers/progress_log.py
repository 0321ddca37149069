"""Progress of long training, for logs and terminals: throttled, with an ETA."""

from __future__ import annotations

import logging
from collections.abc import Callable

from workers.trainer.train import Progress


def describe(p: Progress) -> str:
    remaining = max(p.max_iters - p.session_iteration, 0)
    rate = p.session_iteration / p.elapsed_s if p.elapsed_s > 0 else 0.0
    eta = f"{remaining / rate:.0f}s" if rate > 0 else "?"
    return (
        f"iter {p.iteration} ({p.session_iteration}/{p.max_iters}) loss {p.loss:.4f} lr {p.lr:.2e} "
        f"{p.tokens_per_s:,.0f} tok/s ETA {eta}"
    )


class ProgressLogger:
    """An `on_progress` callback that logs at most every `every_s` seconds (and always the last step)."""

    def __init__(self, log: logging.Logger | Callable[[str], None], session_id: str, every_s: float = 5.0) -> None:
        self._emit = log.info if isinstance(log, logging.Logger) else log
        self._session_id = session_id
        self._every_s = every_s
        self._last = -every_s

    def __call__(self, p: Progress) -> None:
        if p.elapsed_s - self._last >= self._every_s or p.session_iteration >= p.max_iters:
            self._last = p.elapsed_s
            self._emit(f"[{self._session_id[:8]}] {describe(p)}")
