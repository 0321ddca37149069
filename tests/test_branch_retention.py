"""Retention on one branch never deletes weights another branch's registry still names (issue 13, point 6).

The store is keyed by repository and run, shared by every branch; a branch forked from main names main's
checkpoints. These tests run the real sequence: sessions on main, a branch made from main, more sessions
on main whose retention drops the branch's best, then a session on the branch that resumes from it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path

import pytest

from app.config.settings import Settings
from app.github.client import installation_client
from tests.conftest import INSTALLATION_ID, REPO
from tests.repos import git, make_local_repo
from workers.local import store_prefix_for
from workers.session import repos
from workers.session.repos import GitHubRepository, LocalGitRepository, ProgressRepository
from workers.session.session import SessionRequest, SessionResult, run_session
from workers.session.store import CheckpointStore

RUN_DIR = ".training-progress/nanecho-cached-ci"
METADATA = f"{RUN_DIR}/cache/metadata.json"
CHECK = "query BranchFiles repository"  # the reference check's GraphQL operation


def session(settings: Settings, *, branch: str | None = None, max_checkpoints: int | None = None) -> SessionResult:
    async def go() -> SessionResult:
        async with installation_client(settings, INSTALLATION_ID) as gh:
            return await run_local(GitHubRepository(gh, REPO), settings.store_url, REPO, branch, max_checkpoints)

    return asyncio.run(go())


async def run_local(repo: ProgressRepository, store_url: str, prefix: str, branch: str | None,
                    max_checkpoints: int | None) -> SessionResult:
    request = SessionRequest(session_id=uuid.uuid4().hex, profile="ci", max_iters=6, branch=branch,
                             max_checkpoints=max_checkpoints)
    return await run_session(repo, CheckpointStore(store_url), request, store_prefix=prefix)


def stored(store_url: str, result: SessionResult) -> Path:
    return Path(store_url.removeprefix("file://")) / str(result.facts.storage.key)


def registry_ids(emu, branch: str) -> set[str]:
    return set(json.loads(emu.read_file(REPO, METADATA, ref=branch)))


def checks(emu) -> int:
    return sum(1 for c in emu.calls if c.graphql_operation == CHECK)


def test_retention_on_main_keeps_the_weights_a_forked_branch_resumes_from(github, settings) -> None:
    emu, _ = github
    first, second = session(settings), session(settings)
    assert checks(emu) == 0, "nothing dropped, nothing asked"
    emu.create_branch(REPO, "exp")  # someone branches off main: exp names first and second
    assert second.facts.val_loss_after < first.facts.val_loss_after  # second resumed first: exp's best
    third = session(settings, max_checkpoints=2)  # drops first from main
    fourth = session(settings, max_checkpoints=2)  # drops second, exp's best, from main
    assert registry_ids(emu, "main") == {third.checkpoint_id, fourth.checkpoint_id}
    assert stored(settings.store_url, first).is_file() and stored(settings.store_url, second).is_file()
    assert checks(emu) == 2, "one request per session that dropped something"

    on_exp = session(settings, branch="exp", max_checkpoints=1)
    assert on_exp.branch == "exp" and emu.head(REPO) == fourth.commit_oid
    assert on_exp.facts.parent_checkpoint == second.checkpoint_id, on_exp.facts.notes
    assert on_exp.facts.start_iteration == second.facts.end_iteration
    # exp's own retention lets go of what main no longer names either: those weights do leave the store.
    kept_on_exp = registry_ids(emu, "exp")
    for earlier in (first, second):
        assert stored(settings.store_url, earlier).is_file() == (earlier.checkpoint_id in kept_on_exp)
    assert kept_on_exp != {first.checkpoint_id, second.checkpoint_id, on_exp.checkpoint_id}, "nothing was dropped"
    assert all(stored(settings.store_url, r).is_file() for r in (third, fourth, on_exp))
    assert checks(emu) == 3


def test_a_failing_read_of_the_other_branches_keeps_the_weights(github, settings, caplog) -> None:
    emu, _ = github
    first = session(settings)
    emu.inject_fault("POST", "/graphql", 200, body_contains="BranchFiles",
                     body={"data": None, "errors": [{"type": "FORBIDDEN", "path": ["repository", "refs"],
                                                     "message": "Resource not accessible by integration"}]})
    with caplog.at_level(logging.WARNING, logger="workers.session.commit"):
        second = session(settings, max_checkpoints=1)
    assert first.checkpoint_id not in registry_ids(emu, "main")  # retention dropped it...
    assert stored(settings.store_url, first).is_file()  # ...and, not knowing who else needs it, deleted nothing
    assert not emu.faults.pending(), "the reference check never ran"
    assert stored(settings.store_url, second).is_file() and emu.head(REPO) == second.commit_oid
    assert any("could not read the registries" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("pages", "max_bytes", "asked", "why"), [
    (2, repos.MAX_REGISTRIES_BYTES, 2, None),
    (1, repos.MAX_REGISTRIES_BYTES, 1, "more than 2 branches"),
    (2, 100, 1, "over 100 bytes together"),  # docs' registry, on the first page, is over the bound
])
def test_past_the_bounds_nothing_is_deleted(github, settings, monkeypatch, caplog, pages: int, max_bytes: int,
                                            asked: int, why: str | None) -> None:
    """Three branches, two per page: two pages read them all, one page leaves one unread; and registries
    over the byte bound are not read at all. Whatever is left unread, nothing is deleted."""
    emu, _ = github
    monkeypatch.setattr(repos, "BRANCHES_PER_PAGE", 2)
    monkeypatch.setattr(repos, "MAX_BRANCH_PAGES", pages)
    monkeypatch.setattr(repos, "MAX_REGISTRIES_BYTES", max_bytes)
    emu.commit_files(REPO, {METADATA: b"{}" + b" " * 1000}, branch="docs")  # a registry that names nothing
    emu.create_branch(REPO, "gh-pages")  # none at all
    first = session(settings)
    with caplog.at_level(logging.WARNING, logger="workers.session.commit"):
        session(settings, max_checkpoints=1)
    assert first.checkpoint_id not in registry_ids(emu, "main")
    assert stored(settings.store_url, first).is_file() == (why is not None)
    assert checks(emu) == asked
    warned = [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    assert (why is None and warned == []) or (why is not None and any(why in w for w in warned)), warned


def test_a_registry_github_cuts_short_is_read_whole(github, settings) -> None:
    """GitHub gives `Blob.text` only up to 512,000 bytes: a long registry on another branch is read again
    through the contents API, and what it names is kept."""
    emu, _ = github
    first = session(settings)
    registry = json.loads(emu.read_file(REPO, METADATA))
    registry[first.checkpoint_id]["notes"] = "n" * 600_000  # a long-lived branch's registry grows
    emu.commit_files(REPO, {METADATA: json.dumps(registry).encode()}, branch="long")
    session(settings, max_checkpoints=1)
    assert first.checkpoint_id not in registry_ids(emu, "main")
    assert stored(settings.store_url, first).is_file()
    reads = [c for c in emu.calls if c.method == "GET" and c.path.endswith(f"/contents/{METADATA}")
             and c.query.get("ref") == emu.head(REPO, "long")]
    assert len(reads) == 1


def local_session(repo: LocalGitRepository, store_url: str, *, branch: str | None = None,
                  max_checkpoints: int | None = None) -> SessionResult:
    return asyncio.run(run_local(repo, store_url, store_prefix_for(repo), branch, max_checkpoints))


def test_local_mode_keeps_the_weights_a_local_branch_resumes_from(tmp_path: Path) -> None:
    path = make_local_repo(tmp_path / "repo")
    repo, store_url = LocalGitRepository(path), f"file://{tmp_path / 'store'}"
    first, second = local_session(repo, store_url), local_session(repo, store_url)
    git(path, "branch", "exp")
    local_session(repo, store_url, max_checkpoints=2)
    local_session(repo, store_url, max_checkpoints=2)
    on_main = set(json.loads(git(path, "show", f"main:{METADATA}")))
    assert not {first.checkpoint_id, second.checkpoint_id} & on_main
    on_exp = local_session(repo, store_url, branch="exp")
    assert on_exp.branch == "exp"
    assert on_exp.facts.parent_checkpoint == second.checkpoint_id, on_exp.facts.notes
    assert stored(store_url, first).is_file()
