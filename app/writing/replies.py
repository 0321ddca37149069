"""Every comment Retrain writes, in one place: @-mention the requester, quote their command, say what
happened, give one next step. The hidden marker lets later work find Retrain's own comments.
"""

from __future__ import annotations

import re

from app.features.commands import help_text
from app.features.decisions import Origin
from app.github.text_limits import MAX_COMMENT_CHARS
from app.writing.markdown import CONTROL, code_block

MARKER = "<!-- retrain -->"
ROOM = 200  # what create_comment adds (its marker) and a margin: a sample is cut to fit before that
PLAIN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")  # a checkpoint id is repository content


def quoted(line: str) -> str:
    """The command as typed, shown without what it could do in the App's mouth: no control characters, and no
    @-mention that would notify a person or a team again (a word joiner after each @)."""
    return CONTROL.sub("\ufffd", line).replace("@", "@\u2060")


def _reply(origin: Origin, text: str) -> str:
    quote = f"> {quoted(origin.line)}\n\n" if origin.line else ""
    who = f"@{origin.sender} " if origin.sender else ""
    return f"{MARKER}\n{quote}{who}{text}"


def refused(origin: Origin, permission: str, needed: str, action: str = "starting a training session") -> str:
    return _reply(
        origin,
        f"you have `{permission}` permission on this repository; {action} needs "
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


def training(origin: Origin, profile: str, progress: str | None, check_url: str | None) -> str:
    """The session's reply while it trains (edited in place; the final report replaces it)."""
    link = f" Follow it [in its check run]({check_url})." if check_url else ""
    where = f": {progress}" if progress else "; reading the registry and the data"
    return _reply(origin, f"the `{profile}` training session is running{where}.{link}")


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


def history(origin: Origin, rows: list[dict[str, str]], total: int, runs: list[str]) -> str:
    """`rows`: the last sessions, newest first, already formatted (workers.jobs.history.table_rows)."""
    if not rows:
        return _reply(origin, "no training session of this repository has been committed yet. `/retrain` starts one.")
    columns = ("when", "profile", "iterations", "val", "best", "tokenizer", "by", "commit")
    header = ("| finished (UTC) | profile | iterations | val bits/byte (before → after) | best | tokenizer | "
              "trigger (by) | commit |\n|---|---|---|---|---|---|---|---|")
    lines = ["| " + " | ".join(r[c] for c in columns) + " |" for r in rows]
    shown = f"the last {len(rows)} of {total}" if total > len(rows) else f"all {total}"
    where = ", ".join(f"`{r}`" for r in runs)
    return _reply(origin, f"{shown} training session(s) of this repository (runs {where}), newest first; ★ marks "
                          "a run's best validation score so far:\n\n" + "\n".join([header, *lines]))


def sample(origin: Origin, *, prompt: str, text: str, checkpoint: str, profile: str, iteration: int,
           val_bpb: float | None, tokens: int, limit: int = MAX_COMMENT_CHARS) -> str:
    """The prompt and what the checkpoint wrote after it, in one block; the generated text is cut (and says so)
    where the whole reply would pass GitHub's comment limit."""
    score = f", {val_bpb:.4f} val bits per byte" if val_bpb is not None else ""
    named = f"`{checkpoint}`" if PLAIN_ID.match(checkpoint) else "a checkpoint with an unusual id"
    about = (f"here is what {named} (the best `{profile}` checkpoint: iteration {iteration:,}{score}) "
             f"wrote in {tokens} token(s); the prompt is the start of the block:\n\n")
    cut_note = "\n\n(the sample was cut to fit GitHub's comment limit)"
    body = _reply(origin, about + code_block(prompt + text))
    if len(body) + ROOM <= limit:
        return body
    keep = max(0, len(text) - (len(body) + ROOM + len(cut_note) - limit))
    while True:  # a shorter text may hold shorter backtick runs, so a shorter fence: measure again
        body = _reply(origin, about + code_block(prompt + text[:keep]) + cut_note)
        if len(body) + ROOM <= limit or keep == 0:
            return body
        keep = max(0, keep - (len(body) + ROOM - limit))


def sample_limited(origin: Origin, per_hour: int, wait_s: int) -> str:
    return _reply(origin, f"this repository has had its {per_hour} sample(s) this hour; the next one can be asked for "
                          f"in {max(1, -(-wait_s // 60))} minute(s).")


def no_checkpoint(origin: Origin, reason: str) -> str:
    return _reply(origin, f"there is no checkpoint to sample from yet ({reason}). `/retrain` trains one.")


def sample_failed(origin: Origin, reason: str) -> str:
    return _reply(origin, f"I could not write a sample: {reason}")
