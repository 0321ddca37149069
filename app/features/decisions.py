"""What a feature decides from an event, as plain values: the events task carries decisions out.

`Origin` travels in the session's Celery message, so it holds ids and names, never tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Origin:
    """Who asked for a session, through what, and where to report back."""

    repo: str
    installation_id: int
    trigger: str  # issue_comment | workflow_dispatch | workflow_run | check_run | schedule | local
    sender: str | None = None
    delivery_id: str | None = None
    issue_number: int | None = None  # set for comments: replies go there
    comment_id: int | None = None
    line: str | None = None  # the command as typed, quoted in replies
    ref: str | None = None  # branch the trigger names (workflow runs), else the config's or the default
    head_sha: str | None = None  # commit the trigger refers to (check runs attach there)
    pull_number: int | None = None  # a comment on a pull request: the session evaluates its text
    workflow: str | None = None  # workflow file path for workflow triggers; must be listed in the config
    # What GitHub signed that makes this event itself (the comment, the check run, the workflow run, the
    # dispatch's whole body): the session's identity, which a new delivery id cannot change.
    event_key: str | None = None
    signed_at: str | None = None  # when the signed event happened (a comment's created_at), ISO 8601

    def to_message(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StartTraining:
    origin: Origin
    profile: str
    max_iters: int | None = None
    fresh: bool = False
    max_checkpoints: int | None = None  # per-trigger retention override (workflow_dispatch input)
    approve: bool = False  # `/retrain ok-to-test`: approves a fork's pull request head before starting
    approve_sha: str | None = None  # ... only when the head starts with this (the commit the approver saw)


@dataclass(frozen=True)
class RejectCommand:
    """A command that cannot run as typed; the reason is shown to the person."""

    origin: Origin
    reason: str


@dataclass(frozen=True)
class ShowHelp:
    origin: Origin


@dataclass(frozen=True)
class ShowStatus:
    origin: Origin


@dataclass(frozen=True)
class CancelSessions:
    origin: Origin


@dataclass(frozen=True)
class ShowHistory:
    origin: Origin


@dataclass(frozen=True)
class SampleText:
    """Text from the profile's best checkpoint after `prompt` (the commenter's, bounded by the parser)."""

    origin: Origin
    profile: str
    prompt: str


@dataclass(frozen=True)
class Ignore:
    reason: str


@dataclass(frozen=True)
class SyncSchedules:
    """Read these repositories' configs at their default branches and make their cron entries match."""

    installation_id: int
    repos: tuple[str, ...]


@dataclass(frozen=True)
class RemoveSchedules:
    """Drop these repositories' cron entries; `whole_installation` (uninstall): every entry it has."""

    installation_id: int
    repos: tuple[str, ...]
    whole_installation: bool = False


Decision = (
    StartTraining | RejectCommand | ShowHelp | ShowStatus | CancelSessions | ShowHistory | SampleText | Ignore
    | SyncSchedules | RemoveSchedules
)
