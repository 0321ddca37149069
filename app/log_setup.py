"""Logging for every Retrain process: one JSON object per line (or plain text at a terminal), carrying the
delivery id and session id of the work in hand, with tokens and keys redacted from every line.

Ids travel in context variables (`bound(...)`), so a log call deep in the GitHub client or the training
loop needs no extra arguments; asyncio tasks and `asyncio.to_thread` copy the context. Redaction runs on
the finished line, so it also covers exception tracebacks and the arguments of third-party log calls.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
from collections.abc import Iterator
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

LOG_IDS: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar("retrain_log_ids", default=())
REDACTED = "[REDACTED]"
SECRETS = re.compile(
    r"gh[pousr]_[A-Za-z0-9]{20,}"  # GitHub tokens: installation (ghs_), OAuth, user-to-server, refresh, PAT
    r"|github_pat_[A-Za-z0-9_]{20,}"  # fine-grained personal access tokens
    r"|v1\.[0-9a-f]{40}"  # older installation tokens
    r"|eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}"  # JWTs (the App's)
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----"
    r"|(?i:(?<=authorization: )(?:token|bearer) [A-Za-z0-9._~+/=-]+)",  # never past a JSON quote
    re.DOTALL,
)


def redact(text: str) -> str:
    return SECRETS.sub(REDACTED, text)


@contextlib.contextmanager
def bound(**ids: str | None) -> Iterator[None]:
    """Log lines inside carry these ids (delivery_id, session_id, repo...)."""
    merged = {**dict(LOG_IDS.get()), **{k: v for k, v in ids.items() if v}}
    token = LOG_IDS.set(tuple(merged.items()))
    try:
        yield
    finally:
        LOG_IDS.reset(token)


class _WithIds(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in LOG_IDS.get():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class RedactingJsonFormatter(JsonFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class RedactingTextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(f"{k}={v}" for k, v in LOG_IDS.get())
        return redact(f"{line} [{ids}]" if ids else line)


def configure_logging(level: int = logging.INFO, style: Literal["auto", "json", "text"] = "auto") -> None:
    """Replace the root logger's handlers with one on stderr in the chosen style (auto: JSON unless stderr
    is a terminal)."""
    if style == "auto":
        style = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_WithIds())
    if style == "json":
        handler.setFormatter(RedactingJsonFormatter(
            "{asctime}{levelname}{name}{message}", style="{", rename_fields={"levelname": "level", "name": "logger"},
        ))
    else:
        handler.setFormatter(RedactingTextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
