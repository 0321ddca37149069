"""The train worker's job around one session: report it (check run, comment, live status), honour a
cancel request, train, commit, and tell the requester how it went, whatever happened."""

from __future__ import annotations

import logging
import time

from app.errors import RetrainError
from app.features.decisions import Origin
from app.github import installation_client
from app.github_auth import SESSION_PERMISSIONS, TokenCache
from app.settings import Settings
from workers.live import LiveSession, LiveSessions
from workers.progress_log import ProgressLogger
from workers.reporting import SessionReporter
from workers.repos import GitHubRepository
from workers.session import SessionRequest, run_session
from workers.store import CheckpointStore
from workers.trainer.train import Progress

log = logging.getLogger(__name__)
LIVE_EVERY_S = 5.0


async def run_github_session(
    settings: Settings, origin: Origin, request: SessionRequest, check_run_id: int | None, *,
    tokens: TokenCache, live: LiveSessions,
) -> str:
    store = CheckpointStore(settings.store_url)
    async with installation_client(
        settings, origin.installation_id, repo=origin.repo, permissions=SESSION_PERMISSIONS, tokens=tokens
    ) as gh:
        reporter = SessionReporter(
            gh, origin, check_run_id=check_run_id, profile=request.profile, session_id=request.session_id,
            web_url=settings.web_url,
        )
        if live.cancel_requested(request.session_id):
            live.remove(origin.repo, request.session_id)
            await reporter.cancelled_before_start()
            return f"session {request.session_id} cancelled before it started"
        queued = live.get(origin.repo, request.session_id)
        live.put(origin.repo, LiveSession(
            request.session_id, request.profile, "running", request.trigger, request.sender,
            max_iters=request.max_iters, check_url=queued.check_url if queued else None,
        ))
        progress_log = ProgressLogger(log, request.session_id)
        last_live = [float("-inf")]

        def on_progress(p: Progress) -> None:
            progress_log(p)
            reporter.on_progress(p)
            if time.monotonic() - last_live[0] >= LIVE_EVERY_S:
                last_live[0] = time.monotonic()
                rate = p.session_iteration / p.elapsed_s if p.elapsed_s > 0 else 0.0
                live.update(origin.repo, request.session_id, iteration=p.iteration, loss=p.loss,
                            session_iteration=p.session_iteration, max_iters=p.max_iters,
                            eta_s=(p.max_iters - p.session_iteration) / rate if rate > 0 else None)

        await reporter.started()
        try:
            result = await run_session(
                GitHubRepository(gh, origin.repo), store, request, store_prefix=origin.repo, on_progress=on_progress,
                should_stop=lambda: live.cancel_requested(request.session_id),
            )
        except RetrainError as exc:
            await reporter.failed(str(exc))
            return f"session {request.session_id} not run: {exc}"
        except Exception:
            log.exception("session %s failed", request.session_id)
            await reporter.crashed()
            raise
        finally:
            live.remove(origin.repo, request.session_id)
        await reporter.finished(result)
    return f"session {request.session_id} committed {result.commit_oid}"
