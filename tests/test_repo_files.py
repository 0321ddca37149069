"""A session reads only the files `data.include` selects: from GitHub a tree listing and one blob per selected
file (even when GitHub truncates the listing), from a local checkout `ls-tree` and one `cat-file --batch`;
both read the same files of the same commit."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from app.config.settings import Settings
from app.github.auth import SESSION_PERMISSIONS
from app.github.client import installation_client
from tests.conftest import INSTALLATION_ID, REPO
from tests.repos import git, make_local_repo, repo_files
from workers.session.repos import GitHubRepository, LocalGitRepository
from workers.session.snapshot import MAX_FILE_BYTES, Selection, SnapshotTooLarge, selection

NOTES = selection(["notes/**/*.md"], exclude_dirs=[".training-progress"])


def github_files(settings: Settings, repo: str, selected: Selection, **kw: int) -> dict[str, bytes]:
    async def go() -> dict[str, bytes]:
        async with installation_client(settings, INSTALLATION_ID, repo=repo, permissions=SESSION_PERMISSIONS) as gh:
            github = GitHubRepository(gh, repo)
            return await github.files((await github.head(None)).oid, selected, **kw)

    return asyncio.run(go())


def git_calls(emu, kind: str) -> list:
    return [c for c in emu.calls if c.method == "GET" and f"/git/{kind}/" in c.path]


def test_only_the_selected_files_blobs_are_fetched(github, settings) -> None:
    emu, _ = github
    emu.commit_files(REPO, {"data/dump.csv": b"1,2,3\n" * 1000, "docs/guide.md": b"# not training text\n"})
    files = github_files(settings, REPO, NOTES)
    notes = {p: c for p, c in repo_files().items() if p.startswith("notes/")}
    assert files == dict(sorted(notes.items()))
    [listing] = git_calls(emu, "trees")
    assert listing.query == {"recursive": "1"}
    head = emu.head(REPO)
    wanted = {subprocess.run(["git", "--git-dir", str(emu.repos[REPO].git.git_dir), "rev-parse", f"{head}:{p}"],
                             capture_output=True, text=True, check=True).stdout.strip() for p in notes}
    assert {c.path.rsplit("/", 1)[1] for c in git_calls(emu, "blobs")} == wanted
    assert len(git_calls(emu, "blobs")) == len(notes)
    assert not [c for c in emu.calls if "tarball" in c.path or c.host == "codeload.github.com"]


def test_a_truncated_listing_is_walked_folder_by_folder_and_still_finds_every_selected_file(github, settings) -> None:
    emu, _ = github
    deep = {f"notes/{y}/{m:02}.md": f"# {y}-{m}\n".encode() for y in (2023, 2024) for m in range(1, 4)}
    emu.commit_files(REPO, {**deep, **{f"vendor/lib{i}/x.js": b"x" for i in range(5)}})
    whole = github_files(settings, REPO, NOTES)
    emu.calls.clear()
    emu.tree_limit_entries = 5  # GitHub's is 100,000 entries (or 7 MB)
    assert github_files(settings, REPO, NOTES) == whole
    assert set(deep) < set(whole)
    listings = git_calls(emu, "trees")
    assert listings[0].query == {"recursive": "1"} and all(c.query == {} for c in listings[1:])
    # the root, notes/ and its two year folders: never .github/ or vendor/, which cannot hold a selected file
    assert len(listings) == 1 + 4


def test_a_truncated_listing_that_reaches_too_many_folders_is_refused(github, settings, monkeypatch) -> None:
    """Each folder is one request out of the installation's hourly 5,000: the walk has a limit of its own."""
    from workers.session import repos

    emu, _ = github
    emu.commit_files(REPO, {f"notes/f{i}/x.md": b"# x\n" for i in range(12)})
    emu.tree_limit_entries = 5
    monkeypatch.setattr(repos, "MAX_FOLDER_LISTINGS", 10)
    with pytest.raises(SnapshotTooLarge, match=r"reaches more than 10 of its folders; narrow data\.include"):
        github_files(settings, REPO, NOTES)
    assert len(git_calls(emu, "trees")) <= 1 + 10 and not git_calls(emu, "blobs")


def test_the_local_checkout_reads_the_same_files_as_github(github, settings, tmp_path: Path) -> None:
    emu, _ = github
    local = make_local_repo(tmp_path / "local")
    (local / "notes/run.md").write_text("executable text\n")
    (local / "notes/run.md").chmod(0o755)
    (local / "notes/link.md").symlink_to("garden.md")
    (local / "notes/huge.md").write_bytes(b"a" * (MAX_FILE_BYTES + 1))
    (local / ".training-progress/run").mkdir(parents=True)
    (local / ".training-progress/run/notes.md").write_text("progress, never training text\n")
    git(local, "add", "-A")
    head = git(local, "rev-parse", "HEAD").strip()
    git(local, "update-index", "--add", "--cacheinfo", f"160000,{head},notes/sub.md")  # a submodule
    git(local, "commit", "-q", "-m", "modes")
    mirror = emu.add_repository("octo/mirror", {"x": b"y"}, installation_id=INSTALLATION_ID)
    subprocess.run(["git", "--git-dir", str(mirror), "fetch", "-q", str(local), "+main:main"], check=True)
    selected = selection(["**/*.md"], exclude_dirs=[".training-progress"])

    from_local = asyncio.run(LocalGitRepository(local).files(git(local, "rev-parse", "HEAD").strip(), selected))
    assert github_files(settings, "octo/mirror", selected) == from_local
    assert set(from_local) == {"README.md", "notes/run.md", *(p for p in repo_files() if p.startswith("notes/"))}
    assert from_local["notes/run.md"] == b"executable text\n"


@pytest.mark.parametrize("where", ["github", "local"])
def test_a_selection_over_the_cap_fails_before_any_blob_is_read(github, settings, tmp_path: Path, where: str) -> None:
    emu, _ = github
    size = sum(len(c) for p, c in repo_files().items() if p.startswith("notes/"))
    with pytest.raises(SnapshotTooLarge, match=f"are {size:,} bytes together, over the {size - 1:,} bytes"):
        if where == "github":
            github_files(settings, REPO, NOTES, max_bytes=size - 1)
        else:
            local = make_local_repo(tmp_path / "local")
            asyncio.run(LocalGitRepository(local).files(git(local, "rev-parse", "HEAD").strip(), NOTES,
                                                        max_bytes=size - 1))
    assert git_calls(emu, "blobs") == []
