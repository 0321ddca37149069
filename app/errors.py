"""Errors whose message is written for the person who asked for the session; reported in one place.

Anything else that escapes a task is a bug: it is logged with its traceback and the person is told only
that the session failed, never the details (which could hold internals).
"""


class RetrainError(Exception):
    """A problem the requester can understand and act on; `str(exc)` is shown to them."""


class ConfigError(RetrainError, ValueError):
    """`.github/retrain.yml` is invalid; the message names the field and the reason."""


class SessionError(RetrainError):
    """A session cannot run as asked (unknown profile, too little training text, ...)."""
