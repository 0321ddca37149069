"""After a session commits: publish its checkpoint as a GitHub Release when the repository asks for it
(`publish.releases`) and the checkpoint is now its profile's best.

Why a module of its own, apart from the train job: what the session did is already committed when this
runs, so nothing here may cost the session its outcome. Every failure (a file GitHub refuses, GitHub still
failing after retries, a checkpoint that does not read back) becomes a line for the check run and the reply,
"not published: <reason>", and a count in `retrain_releases_total{outcome}`; the session is never trained
again for it. Publishing again after a redelivery is safe: the tag is the checkpoint's, so the release
made (or half made) by the first delivery is found and finished (workers/jobs/publish.py).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from gidgethub import HTTPException

from app.config.repo_config import RepoConfig
from app.errors import RetrainError
from app.telemetry import TELEMETRY
from workers.jobs.publish import publish_folder
from workers.session.best import load_best
from workers.session.export import write_export
from workers.session.plan import SessionRequest, locate
from workers.session.repos import GitHubRepository
from workers.session.store import CheckpointStore
from workers.trainer.data import bits_per_byte

if TYPE_CHECKING:
    from app.github.client import GitHubClient

log = logging.getLogger(__name__)
# "already_there": every file was on the release already (a redelivered session whose first delivery got that far)
PUBLISHED, ALREADY, NOT_BEST, FAILED = "published", "already_there", "not_best", "failed"


@dataclass(frozen=True)
class Publication:
    """What publishing did, in the words the check run and the reply carry (`line`)."""

    outcome: str  # PUBLISHED, ALREADY, NOT_BEST or FAILED
    line: str
    html_url: str | None = None


async def publish_if_best(
    gh: GitHubClient, store: CheckpointStore, *, repo: str, profile: str, branch: str | None, checkpoint_id: str,
    commit_sha: str | None, config: RepoConfig | None, web_url: str,
) -> Publication | None:
    """Publish `checkpoint_id` of `profile` when `config` says so and it is the profile's best on `branch`;
    None when the repository does not publish. Never raises (but for cancellation).

    `config`: the config the session read; None reads it at the branch head (a redelivered session).
    `commit_sha`: the progress commit the tag marks; None tags the branch head the best was read at, which
    holds the checkpoint's registry entry too."""
    progress = GitHubRepository(gh, repo)
    try:
        if config is None:
            config = (await locate(progress, SessionRequest(session_id="publish", profile=profile,
                                                            branch=branch))).config
        if not config.publish.releases:
            return None
        best = await load_best(progress, store, store_prefix=repo, profile=profile, branch=branch)
        if best.entry.checkpoint_id != checkpoint_id:
            val = best.entry.val_loss
            figure = f" ({bits_per_byte(val):.4f} bits/byte)" if val is not None else ""
            return _counted(Publication(NOT_BEST, f"not published as a release: `{checkpoint_id}` is not the "
                                                  f"profile's best; `{best.entry.checkpoint_id}`{figure} still is"))
        tag = config.publish.release_tag(best.run, checkpoint_id)
        target = commit_sha or best.head.oid
        with tempfile.TemporaryDirectory(prefix="retrain-export-") as tmp:
            folder = await asyncio.to_thread(
                write_export, best, Path(tmp) / "export", source=repo,
                commit_url=f"{web_url.rstrip('/')}/{repo}/commit/{target}",
            )
            notes = (folder / "README.md").read_text(encoding="utf-8")
            release = await publish_folder(gh, repo, tag=tag, name=f"{best.run} {checkpoint_id}", commit_sha=target,
                                           notes=notes, folder=folder)
    except RetrainError as exc:  # AssetTooLarge, PublishError, a checkpoint that does not read back, a bad tag
        log.warning("checkpoint %s of %s was not published: %s", checkpoint_id, repo, exc)
        return _counted(Publication(FAILED, f"not published as a release: {exc}"))
    except (HTTPException, aiohttp.ClientError, TimeoutError) as exc:
        log.warning("checkpoint %s of %s was not published", checkpoint_id, repo, exc_info=True)
        why = f"GitHub answered {exc.status_code}" if isinstance(exc, HTTPException) else "GitHub could not be reached"
        return _counted(Publication(FAILED, f"not published as a release: {why} ({type(exc).__name__}); the next "
                                            "best checkpoint is published as usual"))
    except Exception:
        log.exception("publishing checkpoint %s of %s failed", checkpoint_id, repo)
        return _counted(Publication(FAILED, "not published as a release: an internal error; the worker's log has "
                                            "the details"))
    outcome = ALREADY if not release.uploaded and release.skipped else PUBLISHED
    log.info("checkpoint %s of %s is release %s", checkpoint_id, repo, release.html_url,
             extra={"repo": repo, "tag": tag})
    return _counted(Publication(outcome, f"published release [`{tag}`]({release.html_url})", release.html_url))


def _counted(publication: Publication) -> Publication:
    TELEMETRY.count("retrain_releases_total", outcome=publication.outcome)
    return publication
