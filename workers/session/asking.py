"""Slow questions asked off the training loop: is the session cancelled, is the worker draining? Each is a
Redis round trip; asked at every progress boundary they would stall a GPU that runs hundreds of iterations
a second. A thread asks them every `every_s` and the loop reads the last answers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from types import TracebackType

log = logging.getLogger(__name__)
ASK_EVERY_S = 1.0


class Asking:
    def __init__(self, questions: Mapping[str, Callable[[], bool] | None], every_s: float = ASK_EVERY_S) -> None:
        self._questions = {name: ask for name, ask in questions.items() if ask is not None}
        self._every_s = every_s
        self._said: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="retrain-asking", daemon=True)

    def said(self) -> str | None:
        """The first question answered yes so far (in the order given), or None."""
        return self._said

    def _loop(self) -> None:
        while self._said is None and not self._done.is_set():
            for name, ask in self._questions.items():
                try:
                    yes = ask()
                except Exception:  # a question that cannot be answered is a no: training goes on
                    log.warning("could not ask whether %s", name, exc_info=True)
                    yes = False
                if yes:
                    self._said = name
                    return
            self._done.wait(self._every_s)

    def __enter__(self) -> Asking:
        if self._questions:
            self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._every_s + 5)
