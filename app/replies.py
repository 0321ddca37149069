"""Every comment Retrain writes, in one place: @-mention the requester, quote their command, say what
happened, give one next step. The hidden marker lets later work find Retrain's own comments.
"""

from __future__ import annotations

from app.commands import help_text
from app.features.decisions import Origin

MARKER = "<!-- retrain -->"


def _reply(origin: Origin, text: str) -> str:
    quote = f"> {origin.line}\n\n" if origin.line else ""
    who = f"@{origin.sender} " if origin.sender else ""
    return f"{MARKER}\n{quote}{who}{text}"


def refused(origin: Origin, permission: str, needed: str) -> str:
    return _reply(
        origin,
        f"you have `{permission}` permission on this repository; starting a training session needs "
        f"`{needed}` or higher. Ask a maintainer to run the command.",
    )


def rejected(origin: Origin, reason: str) -> str:
    return _reply(origin, f"I could not run this command: {reason}. See `/retrain help`.")


def show_help(origin: Origin, profiles: list[str]) -> str:
    return _reply(origin, f"here is what I understand:\n\n{help_text(profiles)}")


def queued(origin: Origin, profile: str, check_url: str | None, behind: str | None = None) -> str:
    link = f" Follow it [in its check run]({check_url})." if check_url else ""
    after = f" It starts when session `{behind[:8]}` of the same run has committed." if behind else ""
    return _reply(origin, f"a `{profile}` training session is queued.{after}{link}")


def coalesced(origin: Origin, profile: str, waiting: str) -> str:
    return _reply(
        origin,
        f"a `{profile}` session (`{waiting[:8]}`) is already waiting to run after the current one, and it will "
        "train on the newest commit; this request joins it rather than queueing another. "
        "`/retrain status` shows both.",
    )


def failed(origin: Origin, reason: str) -> str:
    return _reply(origin, f"the training session did not run: {reason}")


def crashed(origin: Origin, session_id: str) -> str:
    return _reply(
        origin,
        f"the training session `{session_id}` failed with an internal error; nothing was committed. "
        "The operators have the details in the worker's log; run the command again to retry.",
    )


def finished(origin: Origin, summary_markdown: str) -> str:
    return _reply(origin, summary_markdown)


def status(origin: Origin, rows: list[dict[str, str]]) -> str:
    """`rows`: one per live session, already formatted (see workers.coordination.live.status_rows)."""
    if not rows:
        return _reply(origin, "no session of this repository is queued or running.")
    columns = ("session", "profile", "status", "iteration", "loss", "eta", "by")
    header = "| session | profile | status | iteration | loss | ETA | requested by |\n|---|---|---|---|---|---|---|"
    lines = ["| " + " | ".join(r[c] for c in columns) + " |" for r in rows]
    return _reply(origin, "these sessions are queued or running:\n\n" + "\n".join([header, *lines]))


def cancelled(origin: Origin, session_ids: list[str]) -> str:
    if not session_ids:
        return _reply(origin, "there was nothing to cancel: no session of this repository is queued or running.")
    listed = ", ".join(f"`{s[:8]}`" for s in session_ids)
    return _reply(
        origin,
        f"asked {len(session_ids)} session(s) to stop: {listed}. A running session commits what it has "
        "trained so far; its check run ends as cancelled.",
    )
