"""What Retrain's check runs say, at each stage of a session. Pure: facts in, check-run fields out."""

from __future__ import annotations

from typing import Any

from app.features.check_runs import RETRAIN_ACTION
from app.writing.markdown import code_block

CHECK_NAME = "Retrain"
RETRAIN_BUTTON = {"label": "Retrain", "description": "Run another session of this profile",
                  "identifier": RETRAIN_ACTION}


def check_name(profile: str) -> str:
    return f"{CHECK_NAME} ({profile})"


def queued_output(profile: str, trigger: str, sender: str | None) -> dict[str, Any]:
    by = f" by @{sender}" if sender else ""
    return {"title": f"Queued: {profile} session", "summary": f"Requested through {trigger}{by}."}


def progress_output(
    profile: str, *, iteration: int, session_iteration: int, max_iters: int, loss: float, tokens_per_s: float,
    eta_s: float | None,
) -> dict[str, Any]:
    eta = f"{eta_s:.0f} s" if eta_s is not None else "?"
    return {
        "title": f"Training {profile}: {session_iteration}/{max_iters} iterations, loss {loss:.4f}",
        "summary": (
            "| iteration | this session | loss | tokens/s | ETA |\n|---|---|---|---|---|\n"
            f"| {iteration} | {session_iteration}/{max_iters} | {loss:.4f} | {tokens_per_s:,.0f} | {eta} |"
        ),
    }


def finished_output(summary_markdown: str, *, title: str, chart_url: str | None) -> dict[str, Any]:
    output: dict[str, Any] = {"title": title, "summary": summary_markdown}
    if chart_url:  # the summary shows it too; `images` is where GitHub's check-run page lists it
        output["images"] = [{"alt": "Loss across sessions", "image_url": chart_url}]
    return output


def failed_output(reason: str) -> dict[str, Any]:
    return {"title": "The session did not run to the end", "summary": reason}


def session_summary_markdown(
    *, profile: str, start: int, end: int, val_before: float, val_after: float, unigram: float,
    bpb_before: float, bpb_after: float, unigram_bpb: float,
    elapsed_s: float, tokens_per_s: float, resumed_from: str | None, checkpoint_id: str, commit_oid: str | None,
    commit_url: str | None, notes: tuple[str, ...], pull_number: int | None = None, best_bpb: float | None = None,
    stopped: str | None = None, progress_url: str | None = None, chart_url: str | None = None, sample: str = "",
) -> str:
    """The report a CML user expects, in the check run and the reply alike: the numbers in tables, the loss chart,
    a few lines the new weights wrote, and where it all is. Bits per byte first: they stay comparable across
    tokenizers; the nats are the seed's figure. `commit_oid` None: a pull request's session that committed
    nowhere (`pull_number` says which)."""
    origin = f"resumed from `{resumed_from}`" if resumed_from else "started from a fresh model"
    if commit_oid is None:
        base = (f"the base branch's best, `{resumed_from}`, scores on this pull request's validation text"
                if resumed_from else "a fresh model scores (the base branch has no compatible checkpoint)")
        head = f" at [its head]({commit_url})" if commit_url else ""
        commit = (f"not committed: this evaluates pull request #{pull_number} and leaves the base branch "
                  f"untouched. **Before** is what {base}; **after** is that model trained on the pull "
                  f"request's text{head}. No chart: nothing of it is committed")
    else:
        commit = "committed in " + (f"[`{commit_oid[:12]}`]({commit_url})" if commit_url else f"`{commit_oid[:12]}`")
        if progress_url:
            commit += f"; its progress files are in [the run's folder]({progress_url})"
    best = "" if best_bpb is None else (
        f"{best_bpb:.4f} (this session)" if best_bpb >= bpb_after else f"{best_bpb:.4f} (an earlier checkpoint)")
    lines = [
        f"The `{profile}` session trained {end - start} iterations ({start} → {end}), {origin}.",
        "",
        "| | before | after |",
        "|---|---|---|",
        f"| **validation bits per byte** | {bpb_before:.4f} | **{bpb_after:.4f}** |",
        f"| validation loss (nats per token) | {val_before:.4f} | {val_after:.4f} |",
        f"| unigram baseline (bits per byte) | {unigram_bpb:.4f} | |",
        f"| unigram baseline (nats per token) | {unigram:.4f} | |",
        "",
        "| session | |",
        "|---|---|",
        f"| iterations | {start:,} → {end:,} |",
        *([f"| best so far on this validation set (bits per byte) | {best} |"] if best else []),
        f"| tokens/s | {tokens_per_s:,.0f} |",
        f"| duration | {_duration(elapsed_s)} |",
        f"| stopped | {STOP_REASONS.get(stopped or '', stopped or 'after its iterations')} |",
        "",
        *([f"![Loss across sessions]({chart_url})", ""] if chart_url else []),
        *(["What the new weights write after a line break:", "", code_block(sample), ""] if sample.strip() else []),
        f"Checkpoint `{checkpoint_id}`, {commit}.",
    ]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines)


STOP_REASONS = {"cancelled": "on request (cancelled)", "time limit": "at its time limit"}


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min {secs} s"


def withdrawn_output() -> dict[str, str]:
    return {"title": "Withdrawn", "summary": "The comment that asked for this session was deleted before the "
                                             "session was queued; nothing was trained."}
