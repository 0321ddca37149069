"""Telling people how a session goes: its check run (queued → in progress with throttled progress →
completed with the summary and the loss chart) and, for comments, reactions and replies.

Reporting never fails a session: a progress update that GitHub refuses is logged and dropped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from app.features.decisions import Origin
from app.github.client import GitHubClient
from app.writing import check_output, replies
from workers.session.progress import STOPPED_AT_TIME_LIMIT, STOPPED_ON_REQUEST, SessionFacts
from workers.session.session import SessionResult
from workers.trainer.data import bits_per_byte
from workers.trainer.train import Progress

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class SessionReporter:
    def __init__(
        self, gh: GitHubClient, origin: Origin, *, check_run_id: int | None, profile: str, session_id: str,
        web_url: str, every_s: float = 5.0, find_reply: Callable[[], int | None] | None = None,
        reply_every_s: float = 60.0, check_url: str | None = None,
    ) -> None:
        """`find_reply`: the id of the reply the events task wrote when it queued the session (None while there
        is none yet); that reply is edited as the session goes, so a session has one comment, not a stream."""
        self._find_reply = find_reply
        self._reply_id: int | None = None
        self._reply_every_s = reply_every_s
        self._last_reply = float("-inf")
        self._check_url = check_url
        self._gh = gh
        self._origin = origin
        self._check_run_id = check_run_id
        self._profile = profile
        self._session_id = session_id
        self._web_url = web_url.rstrip("/")
        self._every_s = every_s
        self._loop = asyncio.get_running_loop()
        self._last = float("-inf")
        self._pending: concurrent.futures.Future[None] | None = None

    async def started(self) -> None:
        await self._check(status="in_progress", started_at=_now(),
                          output={"title": f"Training {self._profile}", "summary": "Reading the registry and data."})
        if self._origin.comment_id is not None:
            await self._quietly(self._gh.add_reaction(self._origin.repo, self._origin.comment_id, "rocket"))
        await self._edit_reply(replies.training(self._origin, self._profile, None, self._check_url))

    def on_progress(self, p: Progress) -> None:
        """Called from the training thread: schedules at most one update at a time, every `every_s`."""
        if self._check_run_id is None:
            return
        now = time.monotonic()
        if now - self._last < self._every_s or (self._pending is not None and not self._pending.done()):
            return
        self._last = now
        rate = p.session_iteration / p.elapsed_s if p.elapsed_s > 0 else 0.0
        output = check_output.progress_output(
            self._profile, iteration=p.iteration, session_iteration=p.session_iteration, max_iters=p.max_iters,
            loss=p.loss, tokens_per_s=p.tokens_per_s,
            eta_s=(p.max_iters - p.session_iteration) / rate if rate > 0 else None,
        )
        edit_reply = now - self._last_reply >= self._reply_every_s
        if edit_reply:
            self._last_reply = now
        self._pending = asyncio.run_coroutine_threadsafe(self._progressed(output, p, edit_reply), self._loop)

    async def _progressed(self, output: dict[str, object], p: Progress, edit_reply: bool) -> None:
        await self._check(output=output)
        if edit_reply:
            line = (f"iteration {p.iteration:,} ({p.session_iteration:,} of {p.max_iters:,} this session), "
                    f"training loss {p.loss:.4f}")
            await self._edit_reply(replies.training(self._origin, self._profile, line, self._check_url))

    async def finished(self, result: SessionResult, more: tuple[str, ...] = ()) -> None:
        """`more`: lines about what followed the commit (publishing), listed after the session's notes."""
        facts = result.facts
        committed = result.commit_oid is not None
        # committed: the progress commit; a pull request's evaluation: the head commit whose text it trained on
        commit_url = f"{self._web_url}/{self._origin.repo}/commit/{result.commit_oid or facts.data_commit}"
        chart_url = (f"{self._web_url}/{self._origin.repo}/raw/{result.commit_oid}/{facts.run_dir}/loss.svg"
                     if committed else None)
        summary = check_output.session_summary_markdown(
            profile=facts.profile, start=facts.start_iteration, end=facts.end_iteration,
            val_before=facts.val_loss_before, val_after=facts.val_loss_after, unigram=facts.unigram_val_loss,
            bpb_before=facts.val_bpb_before, bpb_after=facts.val_bpb_after,
            unigram_bpb=bits_per_byte(facts.unigram_val_loss),
            elapsed_s=(facts.finished_at - facts.started_at).total_seconds(), tokens_per_s=facts.tokens_per_s,
            resumed_from=facts.parent_checkpoint, checkpoint_id=facts.checkpoint_id, commit_oid=result.commit_oid,
            commit_url=commit_url, notes=(*facts.notes, *more), pull_number=self._origin.pull_number,
            best_bpb=best_so_far(facts), stopped=facts.stopped, sample=facts.sample, chart_url=chart_url,
            progress_url=(f"{self._web_url}/{self._origin.repo}/tree/{result.commit_oid}/{facts.run_dir}"
                          if committed else None),
        )
        title = (f"val {facts.val_bpb_before:.4f} → {facts.val_bpb_after:.4f} bits/byte "
                 f"in {facts.iterations} iterations")
        if facts.stopped == STOPPED_ON_REQUEST:
            title = f"Cancelled after {facts.iterations} iterations; {title.split(' in ')[0]}"
        elif facts.stopped == STOPPED_AT_TIME_LIMIT:
            title = f"Time limit reached after {facts.iterations} iterations; {title.split(' in ')[0]}"
        conclusion = "cancelled" if facts.stopped == STOPPED_ON_REQUEST else "success"
        await self._complete(conclusion, check_output.finished_output(summary, title=title, chart_url=chart_url))
        await self._reply(replies.finished(self._origin, summary))

    async def waiting(self, holder_session: str) -> None:
        if holder_session == self._session_id:  # an earlier delivery of this session, whose worker stopped
            summary = "This session's worker stopped; it resumes from its last in-session checkpoint shortly."
        else:
            summary = f"Session `{holder_session[:8]}` is training this run; this one starts when it has committed."
        await self._check(output={"title": "Waiting for the run to be free", "summary": summary})

    async def paused(self, iteration: int, why: str | None = None) -> None:
        await self._check(status="queued", output={
            "title": f"Paused at iteration {iteration}",
            "summary": f"{why}; the session continues from there on the next free worker." if why else
            "Its worker is shutting down; the session continues from here on the next free worker.",
        })

    async def already_committed(self, checkpoint_id: str, more: tuple[str, ...] = ()) -> None:
        """A redelivered task whose session had committed before its worker stopped."""
        text = f"This session had already committed checkpoint `{checkpoint_id}`; nothing was trained again."
        text = "\n".join([text, *(f"- {line}" for line in more)])
        await self._complete("success", {"title": f"Committed {checkpoint_id}", "summary": text})

    async def cancelled_before_start(self) -> None:
        await self._complete("cancelled", {"title": "Cancelled before it started", "summary": "Nothing was trained."})
        await self._reply(replies.failed(self._origin, "it was cancelled before it started."))

    async def failed(self, reason: str) -> None:
        await self._complete("failure", check_output.failed_output(reason))
        await self._reply(replies.failed(self._origin, reason))

    async def crashed(self) -> None:
        reason = f"Session `{self._session_id}` failed with an internal error; the worker's log has the details."
        await self._complete("failure", check_output.failed_output(reason))
        await self._reply(replies.crashed(self._origin, self._session_id))

    async def _complete(self, conclusion: str, output: dict[str, object]) -> None:
        if self._pending is not None:  # a late progress update must not overwrite the conclusion
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(self._pending)
        await self._check(status="completed", conclusion=conclusion, completed_at=_now(), output=output,
                          actions=[check_output.RETRAIN_BUTTON])

    async def _check(self, **fields: object) -> None:
        if self._check_run_id is not None:
            await self._quietly(self._gh.update_check_run(self._origin.repo, self._check_run_id, **fields))

    async def _reply(self, body: str) -> None:
        """The session's last word: its reply edited in place, or a new comment when it has none (left)."""
        if self._origin.issue_number is None:
            return
        if not await self._edit_reply(body):
            await self._quietly(self._gh.create_comment(self._origin.repo, self._origin.issue_number, body))

    async def _edit_reply(self, body: str) -> bool:
        """Whether the session's reply now says `body` (False: it has none, or it could not be edited)."""
        if self._origin.issue_number is None:
            return False
        if self._reply_id is None and self._find_reply is not None:
            try:
                self._reply_id = await asyncio.to_thread(self._find_reply)
            except Exception:
                log.warning("could not look up the reply of session %s", self._session_id, exc_info=True)
        if self._reply_id is None:
            return False
        try:
            await self._gh.update_comment(self._origin.repo, self._reply_id, body)
        except Exception:  # deleted meanwhile, or GitHub down: the caller writes anew or waits for the next
            log.warning("could not edit the reply of session %s", self._session_id, exc_info=True)
            return False
        return True

    async def _quietly(self, call: Awaitable[object]) -> None:
        try:
            await call
        except Exception:
            log.warning("could not report session %s to GitHub", self._session_id, exc_info=True)


def best_so_far(facts: SessionFacts) -> float:
    """The best validation bits per byte known on this session's validation set: its own, the checkpoint it
    resumed (measured on this set before training) and those measured again on it."""
    return min([facts.val_bpb_after, facts.val_bpb_before, *map(bits_per_byte, facts.evaluations.values())])
