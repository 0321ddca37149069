"""Progress of long training, for logs and terminals: throttled, with an ETA."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from tqdm import tqdm

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


class ProgressBar:
    """An `on_progress` callback drawing a terminal progress bar (local mode at a terminal)."""

    def __init__(self, session_id: str) -> None:
        self._session_id = session_id
        self._bar: tqdm | None = None

    def __call__(self, p: Progress) -> None:
        if self._bar is None:
            self._bar = tqdm(total=p.max_iters, desc=f"session {self._session_id[:8]}", unit="it", file=sys.stderr,
                             dynamic_ncols=True)
        self._bar.n = p.session_iteration
        self._bar.set_postfix_str(f"iter {p.iteration} loss {p.loss:.4f} {p.tokens_per_s:,.0f} tok/s", refresh=False)
        self._bar.refresh()
        if p.session_iteration >= p.max_iters:
            self._bar.close()


def local_progress(say: Callable[[str], None], session_id: str) -> Callable[[Progress], None]:
    """A bar at a terminal; throttled lines otherwise (CI logs, pipes)."""
    return ProgressBar(session_id) if sys.stderr.isatty() else ProgressLogger(say, session_id, every_s=2.0)
