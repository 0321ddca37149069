"""Committing a session's progress: registry, summary, history and chart in one compare-and-swap commit,
merged into what the branch holds now when it moved; then dropping from the store what retention let go
and no other branch's registry still names."""

from __future__ import annotations

import asyncio
import logging

from app.config.repo_config import RepoConfig
from app.github.client import StaleHead
from workers.session import registry as reg
from workers.session.history import appended, history_line, parse_history
from workers.session.loss_chart import render_svg
from workers.session.plan import metadata_path
from workers.session.progress import (
    SessionFacts,
    commit_message,
    new_entry,
    summary,
    to_json_bytes,
)
from workers.session.references import unshared
from workers.session.repos import ProgressRepository
from workers.session.store import CheckpointStore

log = logging.getLogger(__name__)
COMMIT_ATTEMPTS = 4


async def commit_progress(
    repo: ProgressRepository, config: RepoConfig, branch: str, head: str, facts: SessionFacts,
    max_checkpoints: int | None = None, pending: tuple[reg.CheckpointEntry, ...] = (), fence: int | None = None,
    unusable: frozenset[str] = frozenset(),
) -> tuple[str, str, list[reg.CheckpointEntry]]:
    """Commit registry + summary; when the branch moved, merge into what is there now and try again."""
    entry = new_entry(facts)
    headline, body = commit_message(facts)
    if fence is not None:  # which lease committed: an audit trail of one-session-at-a-time
        body = f"{body}\n\nRetrain-Fence: {fence}"
    path = metadata_path(config, facts.run)
    history_path = f"{facts.run_dir}/history.jsonl"
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        current, _ = reg.parse_registry(await repo.read_file(path, head))
        current = reg.merge(current, {e.checkpoint_id: e for e in pending})
        if facts.fingerprint.val_sha256 is not None:  # what this session measured of earlier checkpoints
            current = reg.with_evaluations(current, facts.fingerprint.val_sha256, facts.evaluations)
        kept, dropped = reg.retain(
            reg.with_entry(current, entry), max_checkpoints or config.retention.max_checkpoints,
            pinned=entry.checkpoint_id, lineage=facts.lineage, val_sha256=facts.fingerprint.val_sha256,
            unusable=unusable,
        )
        history = appended(await repo.read_file(history_path, head), history_line(facts))
        files = {
            path: reg.dump_registry(kept),
            f"{facts.run_dir}/training_summary.json": to_json_bytes(summary(facts, kept)),
            history_path: history,
            f"{facts.run_dir}/loss.svg": render_svg(parse_history(history), f"{facts.run}: loss").encode(),
        }
        try:
            return await repo.commit(branch, head, files, headline, body), branch, dropped
        except StaleHead:
            head = (await repo.head(branch)).oid
            if _holds_session(await repo.read_file(history_path, head), facts.session_id):
                # The branch moved by this session's own commit: it landed and only its answer was lost
                # (a retried request found the head it had made). Committing again would make two.
                log.info("branch %s already holds session %s's commit; not committing again", branch,
                         facts.session_id)
                return head, branch, dropped
            if attempt == COMMIT_ATTEMPTS:
                raise
            log.info("branch %s moved; merging and retrying (attempt %d)", branch, attempt + 1)
            await asyncio.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def _holds_session(history: bytes | None, session_id: str) -> bool:
    return any(line.get("session") == session_id for line in parse_history(history))


async def unshared_drops(
    repo: ProgressRepository, path: str, branch: str, dropped: list[reg.CheckpointEntry]
) -> list[reg.CheckpointEntry]:
    """Of what retention dropped on `branch`, the entries whose weights no other branch's registry (the
    file at `path` on each head) names: only those may leave the store.

    The store is keyed by repository and run, shared by all branches (references.py says why it cannot be
    keyed by branch), so a branch forked before this commit may resume from weights this branch let go.
    The check runs after the commit has landed, so a branch forked from now on no longer names them. When
    the other branches cannot all be read, nothing is deleted: weights cost space, a lost checkpoint costs
    a branch its training.
    """
    stored = [e for e in dropped if e.storage is not None]
    if not stored:
        return []  # nothing to delete, nothing to ask
    try:
        registries = await repo.registries_elsewhere(path, branch)
    except Exception:
        log.warning("could not read the registries of the branches other than %s; keeping the weights of %d "
                    "dropped checkpoints", branch, len(stored), exc_info=True)
        return []
    sharing = unshared(dropped, registries)
    if sharing.kept:
        log.info("kept the weights of %s dropped on %s: still named on %s",
                 ", ".join(e.checkpoint_id for e in sharing.kept), branch, ", ".join(sharing.holders))
    return list(sharing.free)


def forget(
    store: CheckpointStore, run_folder: str, dropped: list[reg.CheckpointEntry], records: tuple[str, ...]
) -> None:
    """After the commit has landed: delete the weights retention dropped (only inside the run's folder:
    the registry is the repository's to write), and the entry records the commit now holds."""
    for entry in dropped:
        if entry.storage is not None:
            store.delete(entry.storage, within=run_folder)
    for key in records:
        store.remove(key)
