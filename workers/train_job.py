"""The train worker's job around one session: hold the run's lease, report the session (check run, comment,
live status), honour a cancel request, train, commit, and tell the requester how it went, whatever happened.

Redelivered tasks are safe: the session id is the delivery's, so a second delivery of a session that
committed reports that and trains nothing, and one whose worker died resumes its in-session checkpoint
(workers/session.py).
"""

from __future__ import annotations

import logging
import time

from app.errors import RetrainError
from app.features.decisions import Origin
from app.github import installation_client
from app.github_auth import SESSION_PERMISSIONS, TokenCache
from app.settings import Settings
from workers.live import LiveSession, LiveSessions
from workers.orphans import SessionMessages
from workers.progress_log import ProgressLogger
from workers.reporting import SessionReporter
from workers.repos import GitHubRepository
from workers.run_lock import Lease, LeaseLost, RunBusy, RunLocks
from workers.run_queue import RunQueue
from workers.session import AlreadyCommitted, Controls, SessionRequest, run_session
from workers.store import CheckpointStore
from workers.trainer.train import Progress

log = logging.getLogger(__name__)
LIVE_EVERY_S = 5.0


async def run_github_session(
    settings: Settings, origin: Origin, request: SessionRequest, check_run_id: int | None, *,
    tokens: TokenCache, live: LiveSessions, locks: RunLocks | None = None, run_queue: RunQueue | None = None,
    queue_slot: str | None = None, first_attempt: bool = True, messages: SessionMessages | None = None,
) -> str:
    """The outcome in a few words; raises RunBusy while another session holds the run (the task retries)."""
    store = CheckpointStore(settings.store_url)
    sid = request.session_id
    async with installation_client(
        settings, origin.installation_id, repo=origin.repo, permissions=SESSION_PERMISSIONS, tokens=tokens
    ) as gh:
        reporter = SessionReporter(
            gh, origin, check_run_id=check_run_id, profile=request.profile, session_id=sid, web_url=settings.web_url,
        )
        if live.cancel_requested(sid):
            _leave(live, run_queue, messages, origin.repo, queue_slot, sid)
            await reporter.cancelled_before_start()
            return f"session {sid} cancelled before it started"
        queued = live.get(origin.repo, sid)
        progress_log = ProgressLogger(log, sid)
        last_live = [float("-inf")]

        def on_progress(p: Progress) -> None:
            progress_log(p)
            reporter.on_progress(p)
            if time.monotonic() - last_live[0] >= LIVE_EVERY_S:
                last_live[0] = time.monotonic()
                rate = p.session_iteration / p.elapsed_s if p.elapsed_s > 0 else 0.0
                try:
                    live.update(origin.repo, sid, iteration=p.iteration, loss=p.loss,
                                session_iteration=p.session_iteration, max_iters=p.max_iters,
                                eta_s=(p.max_iters - p.session_iteration) / rate if rate > 0 else None)
                except Exception:  # Redis away: status goes stale for a while, training goes on
                    log.warning("could not update the live status of %s", sid, exc_info=True)

        async def on_start() -> None:
            live.put(origin.repo, LiveSession(
                sid, request.profile, "running", request.trigger, request.sender,
                max_iters=request.max_iters, check_url=queued.check_url if queued else None,
            ))
            await reporter.started()

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
            on_start=on_start, max_time_s=settings.max_session_s,
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
        except AlreadyCommitted as exc:
            await reporter.already_committed(exc.checkpoint_id)
            return f"session {sid} was already committed ({exc.checkpoint_id}); nothing to do"
        except LeaseLost as exc:
            await reporter.failed(
                f"another session took over this run while this one was unreachable ({exc}); its checkpoint "
                "is kept in the store and the next session commits it"
            )
            return f"session {sid} lost its lease; not committed"
        except RetrainError as exc:
            await reporter.failed(str(exc))
            return f"session {sid} not run: {exc}"
        except Exception:
            log.exception("session %s failed", sid)
            await reporter.crashed()
            raise
        finally:
            if not busy:
                _leave(live, run_queue, messages, origin.repo, queue_slot, sid)
        await reporter.finished(result)
    return f"session {sid} committed {result.commit_oid}"


def _leave(live: LiveSessions, run_queue: RunQueue | None, messages: SessionMessages | None, repo: str,
           slot: str | None, session_id: str) -> None:
    """The session is over, one way or another: out of `/retrain status`, its run's queue and recovery."""
    try:
        live.remove(repo, session_id)
        if messages is not None:
            messages.forget(session_id)
        if run_queue is not None and slot is not None:
            run_queue.release(repo, slot, session_id)
    except Exception:  # records expire on their own
        log.warning("could not clear the records of session %s", session_id, exc_info=True)
