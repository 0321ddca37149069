"""The "Retrain" button on Retrain's own check runs, and "Re-run": both start a new session of the
same profile. Check runs carry `retrain:<profile>:<session>` as external id so that they can be recognised
(and, the session making it unique, found again when the answer to creating one was lost); check runs of
earlier versions carry `retrain:<profile>`. Profile names hold no ':'. Notices (failed check runs that
report a problem) carry `notice:<nonce>`, which no button acts on."""

from __future__ import annotations

import uuid
from typing import Any

from app.features.decisions import Decision, Ignore, Origin, StartTraining

EXTERNAL_ID_PREFIX = "retrain:"
RETRAIN_ACTION = "retrain"


NOTICE_PREFIX = "notice:"


def external_id(profile: str, session_id: str) -> str:
    return f"{EXTERNAL_ID_PREFIX}{profile}:{session_id}"


def notice_id() -> str:
    return f"{NOTICE_PREFIX}{uuid.uuid4().hex}"


def profile_of(ext: str) -> str:
    return ext.removeprefix(EXTERNAL_ID_PREFIX).partition(":")[0]


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
    try:
        origin = Origin(
            repo=str(payload["repository"]["full_name"]), installation_id=int(payload["installation"]["id"]),
            trigger="check_run", sender=(payload.get("sender") or {}).get("login"), delivery_id=delivery_id,
            head_sha=check_run.get("head_sha"),
            # one session per check run and person, whichever of its buttons they press, however often
            event_key=f"check_run:{payload['repository']['full_name']}:{int(check_run['id'])}:"
                      f"{(payload.get('sender') or {}).get('login')}",
        )
    except (KeyError, TypeError, ValueError):
        return Ignore("payload lacks the repository or installation")
    return StartTraining(origin, profile_of(ext))
