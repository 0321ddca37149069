"""Real bare git repositories driven with the `git` CLI, so the emulator's commits are real commits.

Everything is plumbing (hash-object, a temporary index, write-tree, commit-tree, update-ref), the same
way a server applies a commit without a worktree. The environment is pinned so the host's git config
(signing, hooks, default branch) never leaks in.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

ZERO_OID = "0" * 40
_HEX = re.compile(r"^[0-9a-fA-F]{4,40}$")
_FULL_OID = re.compile(r"^[0-9a-f]{40}$")
_SIGNATURE = re.compile(r"^(?P<name>.*) <(?P<email>[^>]*)> (?P<epoch>-?\d+) (?P<tz>[+-]\d{4})$")


@dataclass(frozen=True)
class Identity:
    """Who a commit is by, as git wants it."""

    name: str
    email: str


@dataclass(frozen=True)
class TreeEntry:
    """One `git ls-tree -l` row."""

    mode: str
    kind: str  # blob | tree | commit
    oid: str
    size: int
    path: str


@dataclass(frozen=True)
class Signature:
    """An author or committer line: who, and when in UTC (ISO 8601 with Z, as GitHub prints it)."""

    name: str
    email: str
    date: str


@dataclass(frozen=True)
class RawCommit:
    """One commit object as stored."""

    oid: str
    tree: str
    parents: list[str]
    author: Signature
    committer: Signature
    message: str
    signed: bool


def _signature(line: str) -> Signature:
    m = _SIGNATURE.match(line)
    if m is None:
        return Signature(line, "", "1970-01-01T00:00:00Z")
    when = dt.datetime.fromtimestamp(int(m["epoch"]), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Signature(m["name"], m["email"], when)


class GitError(RuntimeError):
    """A git command failed; carries its stderr."""


class RefMoved(Exception):
    """The branch no longer points where the caller expected (compare-and-swap lost)."""

    def __init__(self, actual: str | None) -> None:
        super().__init__(actual)
        self.actual = actual


class MissingPath(Exception):
    """A deletion named a path that is not in the parent tree."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_LITERAL_PATHSPECS="1",
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",
    )
    return env


class GitRepo:
    """A bare repository on disk; all methods are blocking (call them via asyncio.to_thread)."""

    def __init__(self, git_dir: Path) -> None:
        self.git_dir = git_dir
        self._env = _base_env()

    # --- plumbing -------------------------------------------------------------------------------------
    def git(self, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """Run one git command against this repository."""
        proc = subprocess.run(
            ["git", "--git-dir", str(self.git_dir), *args],
            input=stdin, capture_output=True, env={**self._env, **(env or {})}, check=False,
        )
        if check and proc.returncode != 0:
            raise GitError(f"git {' '.join(args)}: {proc.stderr.decode(errors='replace').strip()}")
        return proc

    def _out(self, *args: str) -> str:
        return self.git(*args).stdout.decode().strip()

    @classmethod
    def init(cls, git_dir: Path, default_branch: str) -> GitRepo:
        """Create an empty bare repository whose HEAD names `default_branch`."""
        git_dir.parent.mkdir(parents=True, exist_ok=True)
        repo = cls(git_dir)
        subprocess.run(["git", "init", "--bare", "-q", f"--initial-branch={default_branch}", str(git_dir)],
                       check=True, capture_output=True, env=repo._env)
        return repo

    # --- reading --------------------------------------------------------------------------------------
    def branch_head(self, branch: str) -> str | None:
        """The commit a branch points to, or None when the branch does not exist."""
        proc = self.git("rev-parse", "--verify", "-q", f"refs/heads/{branch}^{{commit}}", check=False)
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    def resolve(self, ref: str) -> str | None:
        """Resolve a branch, tag, fully qualified ref or (abbreviated) sha the way GitHub's `ref=` does."""
        if not ref or ref.startswith("-") or ".." in ref:
            return None
        candidates = [ref] if ref.startswith("refs/") else [f"refs/heads/{ref}", f"refs/tags/{ref}"]
        if _HEX.match(ref):
            candidates.append(ref)
        for name in candidates:
            proc = self.git("rev-parse", "--verify", "-q", f"{name}^{{commit}}", check=False)
            if proc.returncode == 0:
                return proc.stdout.decode().strip()
        return None

    def entry(self, commit: str, path: str) -> TreeEntry | None:
        """The tree entry at `path` in `commit` (the root tree for an empty path)."""
        path = path.strip("/")
        if not path:
            return TreeEntry("040000", "tree", self._out("rev-parse", f"{commit}^{{tree}}"), 0, "")
        proc = self.git("ls-tree", "-l", "-z", "--full-tree", commit, "--", path, check=False)
        rows = self._parse_ls_tree(proc.stdout) if proc.returncode == 0 else []
        return next((row for row in rows if row.path == path), None)

    def list_tree(self, commit: str, path: str) -> list[TreeEntry]:
        """The entries directly inside the directory `path` of `commit`, with full paths."""
        path = path.strip("/")
        spec = f"{commit}:{path}" if path else f"{commit}^{{tree}}"
        rows = self._parse_ls_tree(self.git("ls-tree", "-l", "-z", spec).stdout)
        prefix = f"{path}/" if path else ""
        return [TreeEntry(r.mode, r.kind, r.oid, r.size, prefix + r.path) for r in rows]

    def tree_entries(self, tree: str, *, recursive: bool) -> list[TreeEntry]:
        """A tree's entries as GitHub's trees API lists them: recursive listings name each sub-tree before
        its contents (`ls-tree -r -t`), with paths relative to `tree`."""
        flags = ["-r", "-t"] if recursive else []
        return self._parse_ls_tree(self.git("ls-tree", "-l", "-z", *flags, tree).stdout)

    def list_tree_recursive(self, tree: str) -> list[TreeEntry]:
        """Every blob and gitlink under a tree, with paths relative to it."""
        return self._parse_ls_tree(self.git("ls-tree", "-r", "-l", "-z", tree).stdout)

    @staticmethod
    def _parse_ls_tree(raw: bytes) -> list[TreeEntry]:
        rows = []
        for record in raw.decode(errors="surrogateescape").split("\0"):
            if not record:
                continue
            meta, name = record.split("\t", 1)
            mode, kind, oid, size = meta.split()
            rows.append(TreeEntry(mode, kind, oid, 0 if size == "-" else int(size), name))
        return rows

    def blob(self, oid: str) -> bytes:
        """The bytes of one blob."""
        return self.git("cat-file", "blob", oid).stdout

    def read_file(self, commit: str, path: str) -> bytes | None:
        """A file's bytes at `commit`, or None when it is missing or not a file."""
        found = self.entry(commit, path)
        return self.blob(found.oid) if found and found.kind == "blob" else None

    def commit_info(self, oid: str) -> dict[str, object]:
        """oid, full message, author name and parents of one commit."""
        raw = self.git("show", "-s", "--format=%H%x00%P%x00%an%x00%cI%x00%B", oid).stdout.decode()
        sha, parents, author, date, message = raw.split("\0", 4)
        return {"oid": sha, "message": message.rstrip("\n"), "author_name": author,
                "committed_date": date, "parents": parents.split()}

    def log(self, branch: str) -> list[dict[str, object]]:
        """Commits reachable from `branch`, newest first."""
        oids = self._out("rev-list", f"refs/heads/{branch}").split()
        return [self.commit_info(oid) for oid in oids]

    def archive(self, commit: str, prefix: str) -> bytes:
        """`git archive --format=tar.gz`, which is what codeload serves for a tarball."""
        return self.git("archive", "--format=tar.gz", f"--prefix={prefix}", commit).stdout

    def object_type(self, oid: str) -> str | None:
        """blob | tree | commit | tag for an existing object named by a full sha, else None."""
        if not _FULL_OID.match(oid):
            return None
        proc = self.git("cat-file", "-t", oid, check=False)
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    def ref_target(self, name: str) -> str | None:
        """The object a fully qualified ref (refs/heads/main) points to, or None."""
        proc = self.git("show-ref", "--verify", "--hash", name, check=False)
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether moving a ref from `ancestor` to `descendant` is a fast-forward."""
        return self.git("merge-base", "--is-ancestor", ancestor, descendant, check=False).returncode == 0

    def raw_commit(self, oid: str) -> RawCommit:
        """Every field of one commit object, parsed from `git cat-file commit`."""
        head, _, message = self.git("cat-file", "commit", oid).stdout.decode(errors="replace").partition("\n\n")
        fields: dict[str, list[str]] = {}
        for line in head.split("\n"):
            key, _, value = line.partition(" ")
            if not line.startswith(" "):  # continuation lines belong to a multi-line header (gpgsig)
                fields.setdefault(key, []).append(value)
        return RawCommit(oid, fields["tree"][0], fields.get("parent", []), _signature(fields["author"][0]),
                         _signature(fields["committer"][0]), message, "gpgsig" in fields)

    # --- writing --------------------------------------------------------------------------------------
    def write_blob(self, data: bytes) -> str:
        """Store one blob (hash-object -w); returns its sha."""
        return self.git("hash-object", "-w", "--stdin", stdin=data).stdout.decode().strip()

    def commit_tree(self, tree: str, parents: list[str], message: str, *, author: Identity, committer: Identity,
                    author_date: str | None = None, committer_date: str | None = None) -> str:
        """Write a commit object (commit-tree) without moving any ref; returns its sha."""
        env = {"GIT_AUTHOR_NAME": author.name, "GIT_AUTHOR_EMAIL": author.email,
               "GIT_COMMITTER_NAME": committer.name, "GIT_COMMITTER_EMAIL": committer.email}
        env.update({k: v for k, v in (("GIT_AUTHOR_DATE", author_date), ("GIT_COMMITTER_DATE", committer_date)) if v})
        args = [a for p in parents for a in ("-p", p)]
        return self.git("commit-tree", tree, *args, stdin=message.encode(), env=env).stdout.decode().strip()

    def update_ref(self, name: str, new: str, old: str) -> bool:
        """Compare-and-swap a ref from `old` to `new` (update-ref with the old value); False if it moved."""
        return self.git("update-ref", name, new, old, check=False).returncode == 0

    def commit(self, branch: str, changes: dict[str, bytes | None], message: str, *, author: Identity,
               committer: Identity, expected_head: str | None, base: str | None = None) -> str:
        """Write one commit applying `changes` (None deletes) on top of `expected_head` and move `branch`.

        A branch that does not exist yet (expected_head None) starts from `base`, or as a root commit.

        The ref moves with `update-ref <new> <old>`, a compare-and-swap: a concurrent push between our
        read and our write makes it fail with RefMoved instead of silently dropping that push.
        """
        head = self.branch_head(branch)
        if head != expected_head:
            raise RefMoved(head)
        parent = head or base
        with tempfile.TemporaryDirectory(prefix="emu-index-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            if parent:
                self.git("read-tree", parent, env=env)
            records = []
            for path, data in changes.items():
                current = self.entry(parent, path) if parent else None
                if data is None:
                    if current is None or current.kind != "blob":
                        raise MissingPath(path)
                    records.append(f"0 {ZERO_OID}\t{path}")  # mode 0 removes the entry
                    continue
                oid = self.git("hash-object", "-w", "--stdin", stdin=data).stdout.decode().strip()
                mode = current.mode if current and current.kind == "blob" else "100644"
                records.append(f"{mode} {oid}\t{path}")
            if records:
                stdin = "".join(r + "\0" for r in records).encode(errors="surrogateescape")
                self.git("update-index", "-z", "--index-info", stdin=stdin, env=env)
            tree = self.git("write-tree", env=env).stdout.decode().strip()
        ident = {"GIT_AUTHOR_NAME": author.name, "GIT_AUTHOR_EMAIL": author.email,
                 "GIT_COMMITTER_NAME": committer.name, "GIT_COMMITTER_EMAIL": committer.email}
        parents = ["-p", parent] if parent else []
        new = self.git("commit-tree", tree, *parents, stdin=message.encode(), env=ident).stdout.decode().strip()
        proc = self.git("update-ref", f"refs/heads/{branch}", new, head or ZERO_OID, check=False)
        if proc.returncode != 0:
            raise RefMoved(self.branch_head(branch))
        return new
