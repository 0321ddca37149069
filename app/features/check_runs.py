"""The "Retrain" button on Retrain's own check runs, and "Re-run": both start a new session of the
same profile. Check runs carry `retrain:<profile>:<session>` as external id so that they can be recognised
(and, the session making it unique, found again when the answer to creating one was lost), and a pull
request's `retrain:<profile>:<session>:pull-<number>`; check runs of earlier versions carry
`retrain:<profile>`. Profile names hold no ':'. Notices (failed check runs that report a problem) carry
`notice:<nonce>`, which no button acts on."""

from __future__ import annotations

import uuid
from typing import Any

from app.features.decisions import Decision, Ignore, Origin, StartTraining

EXTERNAL_ID_PREFIX = "retrain:"
RETRAIN_ACTION = "retrain"


NOTICE_PREFIX = "notice:"


PULL_MARK = "pull-"


def external_id(profile: str, session_id: str, pull_number: int | None = None) -> str:
    """A pull request's session says which: its check run sits on the pull request's head, which may be a
    fork's commit, and its buttons must evaluate the pull request again, not train a branch of that name."""
    pull = f":{PULL_MARK}{pull_number}" if pull_number is not None else ""
    return f"{EXTERNAL_ID_PREFIX}{profile}:{session_id}{pull}"


def notice_id() -> str:
    return f"{NOTICE_PREFIX}{uuid.uuid4().hex}"


def profile_of(ext: str) -> str:
    return ext.removeprefix(EXTERNAL_ID_PREFIX).partition(":")[0]


def pull_of(ext: str) -> int | None:
    """The pull request a check run's session evaluated, or None (a branch's session)."""
    last = ext.removeprefix(EXTERNAL_ID_PREFIX).split(":")[-1]
    number = last.removeprefix(PULL_MARK)
    return int(number) if last.startswith(PULL_MARK) and number.isdigit() and len(number) < 10 else None


def branch_of(check_run: dict[str, Any]) -> str | None:
    """The branch of the check run's suite (None for a detached commit): Retrain creates its own check
    runs only on its repository's branch heads, so the name is one of this repository's branches."""
    branch = (check_run.get("check_suite") or {}).get("head_branch")
    return branch if isinstance(branch, str) and branch else None


def plan_check_run(delivery_id: str, payload: dict[str, Any]) -> Decision:
    action = payload.get("action")
    check_run = payload.get("check_run") or {}
    ext = str(check_run.get("external_id") or "")
    if not ext.startswith(EXTERNAL_ID_PREFIX):
        return Ignore("not one of Retrain's check runs")
    if action == "requested_action":
        if (payload.get("requested_action") or {}).get("identifier") != RETRAIN_ACTION:
            return Ignore("not the Retrain button")
    elif action != "rerequested":
        return Ignore(f"check_run {action} needs nothing")
    pull = pull_of(ext)
    try:
        origin = Origin(
            repo=str(payload["repository"]["full_name"]), installation_id=int(payload["installation"]["id"]),
            trigger="check_run", sender=(payload.get("sender") or {}).get("login"), delivery_id=delivery_id,
            # A pull request's check run: evaluate the pull request again (its head and approval read anew, the
            # config from its base). Else the branch the check run belongs to: its button trains that branch.
            head_sha=None if pull is not None else check_run.get("head_sha"),
            ref=None if pull is not None else branch_of(check_run),
            pull_number=pull,
            # one session per check run and person, whichever of its buttons they press, however often
            event_key=f"check_run:{payload['repository']['full_name']}:{int(check_run['id'])}:"
                      f"{(payload.get('sender') or {}).get('login')}",
        )
    except (KeyError, TypeError, ValueError):
        return Ignore("payload lacks the repository or installation")
    return StartTraining(origin, profile_of(ext))
