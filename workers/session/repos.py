"""Where progress lives: a repository that can be read at a commit and committed to with compare-and-swap.

Two implementations share one session pipeline: `GitHubRepository` (through the API, used by workers) and
`LocalGitRepository` (a git checkout on disk, used by `retrain train` and the demo).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

from gidgethub import BadRequest

from app.errors import RetrainError, SessionError
from app.github.client import BranchFile, BranchHead, GitHubClient, StaleHead
from workers.session.snapshot import MAX_FOLDER_LISTINGS, MAX_TOTAL_BYTES, Selection, SnapshotTooLarge, TreeFile, pick

BLOB_CONCURRENCY = 8  # blobs (and, for a truncated listing, sub-trees) fetched at once
BRANCHES_PER_PAGE = 100  # GitHub's most per page of a connection
MAX_BRANCH_PAGES = 10  # 1,000 branches; past that a reference check gives up and deletes nothing
# Other branches' registries a check reads, together: each is tens of KB to a few MB (an entry lists its files).
MAX_REGISTRIES_BYTES = 256 * 1024 * 1024


class BranchesUnknown(RetrainError):
    """Not every branch could be read, so no weights may be deleted on what was read."""


class ProgressRepository(Protocol):
    name: str

    async def head(self, branch: str | None) -> BranchHead: ...

    async def read_file(self, path: str, ref: str) -> bytes | None: ...

    async def files(self, ref: str, selected: Selection, *, max_bytes: int = MAX_TOTAL_BYTES) -> dict[str, bytes]:
        """The selected files at commit `ref` by path (snapshot.pick): listed first, then only those read,
        so that a selection over `max_bytes` fails (SnapshotTooLarge) before anything is downloaded."""
        ...

    async def commit(
        self, branch: str, expected_head: str, files: Mapping[str, bytes], headline: str, body: str
    ) -> str:
        """The new commit's oid; raises `StaleHead` when the branch no longer points at `expected_head`."""
        ...

    async def registries_elsewhere(self, path: str, except_branch: str) -> dict[str, bytes]:
        """The file at `path` on the head of every branch but `except_branch` that has one (branch ->
        bytes): what retention checks before deleting weights another branch may resume from. Raises
        `BranchesUnknown` rather than answer for only some of the branches."""
        ...

    async def merged_into(self, numbers: list[int], branch: str) -> dict[int, str]:
        """The pull requests of these merged into `branch`, each with the head commit that was merged; raises
        `PullsUnknown` when that cannot be told (a repository without pull requests answers none)."""
        ...


class PullsUnknown(Exception):
    """Whether pull requests were merged could not be read (the installation may lack `pull_requests`)."""


class GitHubRepository:
    def __init__(self, client: GitHubClient, full_name: str) -> None:
        self.client = client
        self.name = full_name

    async def head(self, branch: str | None) -> BranchHead:
        return await self.client.branch_head(self.name, branch)

    async def read_file(self, path: str, ref: str) -> bytes | None:
        return await self.client.read_file(self.name, path, ref)

    async def files(self, ref: str, selected: Selection, *, max_bytes: int = MAX_TOTAL_BYTES) -> dict[str, bytes]:
        limit = asyncio.Semaphore(BLOB_CONCURRENCY)
        chosen = pick(await self._listing(ref, selected, limit), selected, max_bytes=max_bytes)

        async def fetch(entry: TreeFile) -> bytes:
            async with limit:
                return await self.client.blob(self.name, entry.sha)

        contents = await asyncio.gather(*(fetch(e) for e in chosen))
        return {e.path: data for e, data in zip(chosen, contents, strict=True)}

    async def _listing(self, ref: str, selected: Selection, limit: asyncio.Semaphore) -> list[TreeFile]:
        """Every file entry at `ref`: one recursive listing, or when GitHub truncated it (over 100,000
        entries or 7 MB), one listing per folder, entering only folders that may hold a selected file."""
        top = await self.client.tree(self.name, ref, recursive=True)
        if not top.get("truncated"):
            return _tree_files(top["tree"], "")

        async def one(sha: str) -> dict[str, Any]:
            async with limit:
                return await self.client.tree(self.name, sha, recursive=False)

        found: list[TreeFile] = []
        folders = [("", str(top["sha"]))]
        listed = 0
        while folders:  # a level at a time
            listed += len(folders)
            if listed > MAX_FOLDER_LISTINGS:
                raise SnapshotTooLarge(
                    f"{self.name} is too large to list in full, and data.include reaches more than "
                    f"{MAX_FOLDER_LISTINGS:,} of its folders; narrow data.include to the folders that hold the "
                    "training text (`notes/**/*.md` rather than `**/*.md`)"
                )
            listings = await asyncio.gather(*(one(sha) for _, sha in folders))
            deeper: list[tuple[str, str]] = []
            for (prefix, _), listing in zip(folders, listings, strict=True):
                if listing.get("truncated"):
                    raise SessionError(
                        f"GitHub truncated the listing of the folder `{prefix or '/'}` in {self.name}: it has too "
                        "many entries to read; move the training text to a smaller folder"
                    )
                found += _tree_files(listing["tree"], prefix)
                deeper += [(f"{prefix}{e['path']}/", str(e["sha"])) for e in listing["tree"]
                           if e.get("type") == "tree" and selected.may_hold(prefix + e["path"])]
            folders = deeper
        return found

    async def commit(
        self, branch: str, expected_head: str, files: Mapping[str, bytes], headline: str, body: str
    ) -> str:
        return await self.client.commit_files(self.name, branch, expected_head, files, headline, body)

    async def merged_into(self, numbers: list[int], branch: str) -> dict[int, str]:
        merged: dict[int, str] = {}
        for number in numbers:
            try:
                pull = await self.client.pull_request(self.name, number)
            except BadRequest as exc:
                if exc.status_code == HTTPStatus.NOT_FOUND:
                    continue  # deleted (spam), or never a pull request of this repository
                raise PullsUnknown(f"pull request #{number}: GitHub answered {exc.status_code}") from exc
            if pull.merged and pull.base_ref == branch:
                merged[number] = pull.head_sha
        return merged

    async def registries_elsewhere(self, path: str, except_branch: str) -> dict[str, bytes]:
        """One GraphQL request per 100 branches, at most MAX_BRANCH_PAGES of them, and registries of at most
        MAX_REGISTRIES_BYTES together (anyone who can push makes branches); a file GitHub would not give as
        whole text (binary, or cut short) is read again through the contents API."""
        others: list[BranchFile] = []
        cursor: str | None = None
        for _ in range(MAX_BRANCH_PAGES):
            page, cursor = await self.client.branch_files(self.name, path, first=BRANCHES_PER_PAGE, after=cursor)
            others += [f for f in page if f.exists and f.branch != except_branch]
            if sum(f.size for f in others) > MAX_REGISTRIES_BYTES:  # the registry is repository content
                raise BranchesUnknown(f"the registries on {self.name}'s other branches are over "
                                      f"{MAX_REGISTRIES_BYTES:,} bytes together; they were not read")
            if cursor is None:
                break
        else:
            raise BranchesUnknown(
                f"{self.name} has more than {MAX_BRANCH_PAGES * BRANCHES_PER_PAGE:,} branches; not all of their "
                "registries could be read"
            )
        limit = asyncio.Semaphore(BLOB_CONCURRENCY)

        async def contents(f: BranchFile) -> bytes:
            if f.text is not None:
                return f.text.encode()
            async with limit:
                raw = await self.client.read_file(self.name, path, f.oid)
            if raw is None:  # listed a moment ago at that very commit: GitHub answers oddly, so know nothing
                raise BranchesUnknown(f"{path} on {f.branch} of {self.name} was listed but could not be read")
            return raw

        read = await asyncio.gather(*(contents(f) for f in others))
        return {f.branch: raw for f, raw in zip(others, read, strict=True)}


def _tree_files(entries: list[dict[str, Any]], prefix: str) -> list[TreeFile]:
    """The blob entries of a GitHub tree listing (symlinks too: pick() tells them apart by mode)."""
    return [TreeFile(prefix + e["path"], str(e["mode"]), str(e["sha"]), int(e.get("size") or 0))
            for e in entries if e.get("type") == "blob"]


class GitError(RetrainError):
    """A local repository cannot be used as asked; the message says what to do."""


# Progress commits are the bot's work, as they are on GitHub; this also works where git has no identity set.
BOT_IDENTITY = {
    "GIT_AUTHOR_NAME": "retrain",
    "GIT_AUTHOR_EMAIL": "retrain@localhost",
    "GIT_COMMITTER_NAME": "retrain",
    "GIT_COMMITTER_EMAIL": "retrain@localhost",
}


class LocalGitRepository:
    """A local repository, committed to with plumbing so that `update-ref` gives the same compare-and-swap.

    The working tree and index are moved along only when they were clean at the old head, so local edits
    are never overwritten.
    """

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self.name = self.path.name
        if self._git("rev-parse", "--is-inside-work-tree", check=False).strip() != "true":
            raise GitError(f"{self.path} is not a git working tree (run `git init` there first)")

    def remembered_store(self) -> str | None:
        """The store the last local session here used (`git config retrain.store`), so that `retrain sample`
        and `retrain export` find the weights without being told again."""
        return self._git("config", "--local", "--get", "retrain.store", check=False).strip() or None

    def remember_store(self, url: str) -> None:
        self._git("config", "--local", "retrain.store", url, check=False)

    async def head(self, branch: str | None) -> BranchHead:
        name = branch or self._git("symbolic-ref", "--short", "HEAD").strip()
        oid = self._git("rev-parse", "--verify", "--quiet", f"refs/heads/{name}^{{commit}}", check=False).strip()
        if not oid:
            raise GitError(f"branch {name} has no commits in {self.path}; commit your training text first")
        return BranchHead(name=name, oid=oid)

    async def read_file(self, path: str, ref: str) -> bytes | None:
        proc = self._run("cat-file", "blob", f"{ref}:{path}", check=False)
        return proc.stdout if proc.returncode == 0 else None

    async def files(self, ref: str, selected: Selection, *, max_bytes: int = MAX_TOTAL_BYTES) -> dict[str, bytes]:
        return await asyncio.to_thread(self._files, ref, selected, max_bytes)

    def _files(self, ref: str, selected: Selection, max_bytes: int) -> dict[str, bytes]:
        """`ls-tree -r -l` to choose, then one `cat-file --batch` for all the chosen blobs."""
        listing = self._run("ls-tree", "-r", "-l", "-z", "--full-tree", ref).stdout
        entries: list[TreeFile] = []
        for record in listing.decode(errors="surrogateescape").split("\0"):
            if record:
                meta, path = record.split("\t", 1)
                mode, kind, sha, size = meta.split()
                if kind == "blob":
                    entries.append(TreeFile(path, mode, sha, int(size)))
        chosen = pick(entries, selected, max_bytes=max_bytes)
        out = self._run("cat-file", "--batch", input="".join(f"{e.sha}\n" for e in chosen).encode()).stdout
        files: dict[str, bytes] = {}
        at = 0
        for entry in chosen:  # each answer: "<sha> blob <size>\n", the bytes, "\n"
            header_end = out.index(b"\n", at)
            size = int(out[at:header_end].split()[2])
            files[entry.path] = out[header_end + 1 : header_end + 1 + size]
            at = header_end + 1 + size + 1
        return files

    async def commit(
        self, branch: str, expected_head: str, files: Mapping[str, bytes], headline: str, body: str
    ) -> str:
        index = self.path / ".git" / f"retrain-index-{os.getpid()}"
        env = {"GIT_INDEX_FILE": str(index)}
        try:
            self._git("read-tree", expected_head, env=env)
            for path, content in sorted(files.items()):
                blob = self._run("hash-object", "-w", "--stdin", input=content).stdout.decode().strip()
                self._git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
            tree = self._git("write-tree", env=env).strip()
        finally:
            index.unlink(missing_ok=True)
        message = f"{headline}\n\n{body}\n".encode()
        new = self._run("commit-tree", tree, "-p", expected_head, input=message, env=BOT_IDENTITY).stdout
        new_oid = new.decode().strip()
        moved = self._run("update-ref", f"refs/heads/{branch}", new_oid, expected_head, check=False)
        if moved.returncode != 0:
            raise StaleHead(f"{self.name}@{branch} moved past {expected_head[:12]}")
        self._follow_checkout(branch, expected_head, new_oid)
        return new_oid

    async def merged_into(self, numbers: list[int], branch: str) -> dict[int, str]:
        return {}  # a local checkout has no pull requests

    async def registries_elsewhere(self, path: str, except_branch: str) -> dict[str, bytes]:
        listing = self._git("for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/")
        found: dict[str, bytes] = {}
        for oid, ref in (line.split(" ", 1) for line in listing.splitlines() if line):
            branch = ref.removeprefix("refs/heads/")
            if branch != except_branch and (raw := await self.read_file(path, oid)) is not None:
                found[branch] = raw
        return found

    def _follow_checkout(self, branch: str, old: str, new: str) -> None:
        """Bring a clean checkout of `branch` to the new commit, as `git pull` would."""
        current = self._git("symbolic-ref", "--quiet", "--short", "HEAD", check=False).strip()
        if current != branch:
            return
        self._run("read-tree", "-m", "-u", old, new, check=False)

    def _git(self, *args: str, check: bool = True, env: Mapping[str, str] | None = None) -> str:
        return self._run(*args, check=check, env=env).stdout.decode(errors="replace")

    def _run(
        self, *args: str, check: bool = True, input: bytes | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(
            ["git", "-C", str(self.path), *args],
            input=input,
            capture_output=True,
            env={**os.environ, **(env or {})},
        )
        if check and proc.returncode != 0:
            raise GitError(f"git {args[0]} failed in {self.path}: {proc.stderr.decode(errors='replace').strip()}")
        return proc
