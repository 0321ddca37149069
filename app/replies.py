"""Every comment Retrain writes, in one place: @-mention the requester, quote their command, say what
happened, give one next step. The hidden marker lets later work find and edit Retrain's own comments.
"""

from __future__ import annotations

from app.features.retrain_command import CommentContext

MARKER = "<!-- retrain -->"


def _reply(context: CommentContext, text: str) -> str:
    return f"{MARKER}\n> {context.line}\n\n@{context.sender} {text}"


def refused(context: CommentContext, permission: str, needed: str) -> str:
    return _reply(
        context,
        f"you have `{permission}` permission on this repository; starting a training session needs "
        f"`{needed}` or higher. Ask a maintainer to run the command.",
    )


def rejected(context: CommentContext, reason: str) -> str:
    return _reply(context, f"I could not run this command: {reason}.")


def failed(context: CommentContext, reason: str) -> str:
    return _reply(context, f"the training session did not run: {reason}")


def crashed(context: CommentContext, session_id: str) -> str:
    return _reply(
        context,
        f"the training session `{session_id}` failed with an internal error; nothing was committed. "
        "The operators have the details in the worker's log; run the command again to retry.",
    )


def finished(
    context: CommentContext, *, profile: str, iterations: int, start: int, end: int,
    val_before: float, val_after: float, resumed_from: str | None, checkpoint_id: str, commit_oid: str,
) -> str:
    origin = f"resumed from `{resumed_from}`" if resumed_from else "started from a fresh model"
    return _reply(
        context,
        f"the `{profile}` session finished: {iterations} iterations ({start} → {end}), {origin}.\n\n"
        f"| | val loss |\n|---|---|\n| before | {val_before:.4f} |\n| after | {val_after:.4f} |\n\n"
        f"Checkpoint `{checkpoint_id}` is committed in {commit_oid}.",
    )
