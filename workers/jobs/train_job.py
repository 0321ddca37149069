"""The train worker's job around one session: hold the run's lease, report the session (check run, comment,
live status), honour a cancel request, train, commit, publish the checkpoint when the repository asks for it and it
is the profile's best (workers/jobs/release.py), and tell the requester how it went, whatever happened.

Redelivered tasks are safe: the session id is the delivery's, so a second delivery of a session that
committed reports that and trains nothing, and one whose worker died resumes its in-session checkpoint
(workers/session/session.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.config.settings import Settings
from app.errors import RetrainError
from app.features.decisions import Origin
from app.github.auth import PULL_PERMISSIONS, SESSION_PERMISSIONS, TokenCache
from app.github.client import installation_client
from app.telemetry import TELEMETRY
from workers.coordination.budget import Grant, SessionBudgets
from workers.coordination.live import LiveSession, LiveSessions
from workers.coordination.orphans import SessionMessages
from workers.coordination.run_lock import Lease, LeaseLost, RunBusy, RunLocks
from workers.coordination.run_queue import RunQueue
from workers.coordination.starts import SessionStarts
from workers.jobs.release import publish_if_best
from workers.jobs.reporting import SessionReporter
from workers.session.pretrained import PretrainedSources
from workers.session.progress import STOPPED_AT_TIME_LIMIT, STOPPED_ON_REQUEST
from workers.session.progress_log import ProgressLogger
from workers.session.repos import GitHubRepository
from workers.session.session import (
    AlreadyCommitted,
    Controls,
    SessionPaused,
    SessionRequest,
    TimeCap,
    TrainingProcessLost,
    run_session,
)
from workers.session.store import CheckpointStore
from workers.session.training_options import TrainingOptions
from workers.trainer.train import Progress

log = logging.getLogger(__name__)
LIVE_EVERY_S = 5.0


@dataclass(frozen=True)
class Coordination:
    """Where a session meets the others, all in Redis: its live status (`/retrain status`, cancel), its
    run's lease, its slot in the run's queue, and its kept message (for the orphan check)."""

    live: LiveSessions
    locks: RunLocks | None = None
    run_queue: RunQueue | None = None
    messages: SessionMessages | None = None
    budgets: SessionBudgets | None = None
    starts: SessionStarts | None = None  # where the events task left the session's reply, edited as it goes

    def leave(self, repo: str, slot: str | None, session_id: str, installation_id: int | None = None) -> None:
        """The session is over, one way or another: out of status, its run's queue and recovery, and no
        session time held for it (a lost worker's hold included)."""
        try:
            if self.budgets is not None and installation_id is not None:
                self.budgets.release_session(installation_id, session_id)
            self.live.remove(repo, session_id)
            if self.messages is not None:
                self.messages.forget(session_id)
            if self.run_queue is not None and slot is not None:
                self.run_queue.release(repo, slot, session_id)
        except Exception:  # records expire on their own
            log.warning("could not clear the records of session %s", session_id, exc_info=True)


async def run_github_session(
    settings: Settings, origin: Origin, request: SessionRequest, check_run_id: int | None, *,
    tokens: TokenCache, coordination: Coordination, queue_slot: str | None = None, first_attempt: bool = True,
    draining: Callable[[], bool] | None = None, worker_losses: int = 0, wanted_s: float | None = None,
    check_url: str | None = None,
) -> str:
    """The outcome in a few words. Raises RunBusy while another session holds the run, and SessionPaused
    when the worker shuts down mid-session: the task sends itself again in both cases.

    `worker_losses`: how many earlier starts of this session lost their worker process (a poison pill at
    settings.max_worker_losses); `wanted_s`: the session's soft time limit, what it asks of the budget."""
    store = CheckpointStore(settings.store_url)
    live, locks = coordination.live, coordination.locks
    sid = request.session_id
    series = {"repo": origin.repo, "profile": request.profile}

    def ended(outcome: str) -> None:
        TELEMETRY.count("retrain_sessions_total", profile=request.profile, outcome=outcome)

    async with installation_client(
        settings, origin.installation_id, repo=origin.repo, permissions=SESSION_PERMISSIONS, tokens=tokens,
        optional_permissions=PULL_PERMISSIONS,  # which evaluated pull requests were merged (workers/session/plan)
    ) as gh:
        reporter = SessionReporter(
            gh, origin, check_run_id=check_run_id, profile=request.profile, session_id=sid, web_url=settings.web_url,
            find_reply=(lambda: starts.reply_of(sid)) if (starts := coordination.starts) is not None else None,
            check_url=check_url,
        )
        if live.cancel_requested(sid):
            coordination.leave(origin.repo, queue_slot, sid, origin.installation_id)
            ended("cancelled_before_start")
            await reporter.cancelled_before_start()
            return f"session {sid} cancelled before it started"
        if worker_losses >= settings.max_worker_losses:
            coordination.leave(origin.repo, queue_slot, sid, origin.installation_id)
            ended("worker_lost")
            await reporter.failed(
                f"the worker process running this session, or one of its training processes, was lost "
                f"{worker_losses} times (killed for memory or past its hard time limit, most likely); it is not sent "
                f"again (RETRAIN_MAX_WORKER_LOSSES, set by whoever runs the App, is {settings.max_worker_losses}). "
                "Try a smaller profile or fewer iterations."
            )
            return f"session {sid} failed: its worker was lost {worker_losses} times"
        queued = live.get(origin.repo, sid)
        grant: list[Grant] = []
        progress_log = ProgressLogger(log, sid)
        last_live = [float("-inf")]

        def on_progress(p: Progress) -> None:
            progress_log(p)
            reporter.on_progress(p)
            if time.monotonic() - last_live[0] >= LIVE_EVERY_S:
                last_live[0] = time.monotonic()
                for held in grant:
                    held.charge()
                rate = p.session_iteration / p.elapsed_s if p.elapsed_s > 0 else 0.0
                TELEMETRY.gauge("retrain_training_tokens_per_second", p.tokens_per_s, **series)
                TELEMETRY.gauge("retrain_training_loss", p.loss, **series)
                try:
                    live.update(origin.repo, sid, iteration=p.iteration, loss=p.loss,
                                session_iteration=p.session_iteration, max_iters=p.max_iters,
                                eta_s=(p.max_iters - p.session_iteration) / rate if rate > 0 else None)
                except Exception:  # Redis away: status goes stale for a while, training goes on
                    log.warning("could not update the live status of %s", sid, exc_info=True)

        async def on_start() -> TimeCap | None:
            cap = None
            if coordination.budgets is not None:
                want = min(wanted_s or settings.max_session_s, settings.max_session_s)
                grant.append(coordination.budgets.grant(origin.installation_id, sid, want))  # or BudgetSpent
                cap = TimeCap(grant[0].seconds, "this installation's session time left today "
                                                "(RETRAIN_GPU_SECONDS_PER_DAY)")
            live.put(origin.repo, LiveSession(
                sid, request.profile, "running", request.trigger, request.sender,
                max_iters=request.max_iters, check_url=queued.check_url if queued else None,
            ))
            await reporter.started()
            return cap

        def hold_run(run: str) -> Lease:
            assert locks is not None
            return locks.acquire(origin.repo, run, sid)

        def cancel_requested() -> bool:
            try:
                return live.cancel_requested(sid)
            except Exception:  # Redis away: keep training rather than crash the session
                return False

        controls = Controls(
            on_progress=on_progress, should_stop=cancel_requested, hold_run=hold_run if locks else None,
            on_start=on_start, max_time_s=settings.max_session_s, should_pause=draining, limits=settings.limits,
            max_snapshot_bytes=settings.max_snapshot_bytes, training=TrainingOptions.from_settings(settings),
            pretrained=PretrainedSources(roots=settings.pretrained_roots, hub=settings.pretrained_hub,
                                         limits=settings.limits),
        )
        busy = False
        try:
            result = await run_session(
                GitHubRepository(gh, origin.repo), store, request, store_prefix=origin.repo, controls=controls,
            )
        except RunBusy as exc:
            busy = True
            if first_attempt:
                await reporter.waiting(exc.holder_session)
            raise
        except SessionPaused as exc:
            busy = True  # still this run's session: it keeps its queue slot and status
            live.update(origin.repo, sid, status="queued")
            lost = isinstance(exc, TrainingProcessLost)
            ended("process_lost" if lost else "paused")
            await reporter.paused(exc.iteration, str(exc) if lost else None)
            raise
        except AlreadyCommitted as exc:
            ended("already_committed")
            # its first delivery may have stopped before publishing, or part way: finish that (found by its tag)
            published = await publish_if_best(
                gh, store, repo=origin.repo, profile=request.profile, branch=request.branch,
                checkpoint_id=exc.checkpoint_id, commit_sha=None, config=None, web_url=settings.web_url,
            )
            await reporter.already_committed(exc.checkpoint_id, (published.line,) if published else ())
            return f"session {sid} was already committed ({exc.checkpoint_id}); nothing to do"
        except LeaseLost as exc:
            ended("lease_lost")
            await reporter.failed(
                f"another session took over this run while this one was unreachable ({exc}); its checkpoint "
                "is kept in the store and the next session commits it"
            )
            return f"session {sid} lost its lease; not committed"
        except RetrainError as exc:
            ended("failed")
            await reporter.failed(str(exc))
            return f"session {sid} not run: {exc}"
        except Exception:
            log.exception("session %s failed", sid)
            ended("crashed")
            await reporter.crashed()
            raise
        finally:
            for held in grant:
                held.close()
            if not busy:
                coordination.leave(origin.repo, queue_slot, sid, origin.installation_id)
        ended({STOPPED_ON_REQUEST: "cancelled", STOPPED_AT_TIME_LIMIT: "time_limit"}.get(
            result.facts.stopped or "", "committed"))
        TELEMETRY.gauge("retrain_validation_loss", result.facts.val_loss_after, **series)
        TELEMETRY.gauge("retrain_validation_bits_per_byte", result.facts.val_bpb_after, **series)
        if result.commit_oid is None:  # a pull request's evaluation: nothing committed, nothing to publish
            await reporter.finished(result)
            return f"session {sid} evaluated pull request #{request.pull_number}; nothing committed"
        if request.pull_number is not None:  # committed to the pull request's branch: releases come from its base
            await reporter.finished(result)
            return f"session {sid} committed {result.commit_oid} to pull request #{request.pull_number}'s branch"
        published = await publish_if_best(
            gh, store, repo=origin.repo, profile=request.profile, branch=result.branch,
            checkpoint_id=result.checkpoint_id, commit_sha=result.commit_oid, config=result.config,
            web_url=settings.web_url,
        )
        await reporter.finished(result, (published.line,) if published else ())
    return f"session {sid} committed {result.commit_oid}"

