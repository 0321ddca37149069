"""`POST /git/trees` on a real repository: apply path entries to a base tree in a temporary index.

Entries behave as GitHub applies them: nested paths create subtrees, a later entry for the same path
wins, `sha: null` deletes a path (GitHub answers 422 "GitRPC::BadObjectState" when that path is not
there), a `040000` entry grafts an existing tree, a `160000` entry is a gitlink.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from .gitstore import ZERO_OID, GitRepo


class BadObjectState(Exception):
    """A deletion named a path the base tree does not have."""


@dataclass(frozen=True)
class TreeChange:
    """One entry to apply: `oid` None deletes `path`."""

    path: str
    mode: str
    oid: str | None


def build_tree(git: GitRepo, base_tree: str | None, changes: list[TreeChange]) -> str:
    """Write the tree `base_tree` + `changes` and return its sha (blocking; run it in a thread)."""
    with tempfile.TemporaryDirectory(prefix="emu-tree-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git.git("read-tree", *([base_tree] if base_tree else ["--empty"]), env=env)
        listed = git.git("ls-files", "-z", "--cached", env=env).stdout.decode(errors="surrogateescape")
        present = {p for p in listed.split("\0") if p}
        pending: list[str] = []

        def flush() -> None:
            if pending:
                stdin = "".join(r + "\0" for r in pending).encode(errors="surrogateescape")
                git.git("update-index", "-z", "--index-info", stdin=stdin, env=env)
                pending.clear()

        def remove(paths: set[str]) -> None:
            pending.extend(f"0 {ZERO_OID}\t{p}" for p in sorted(paths))
            present.difference_update(paths)

        for change in changes:
            path = change.path
            inside = {p for p in present if p == path or p.startswith(path + "/")}
            if change.oid is None:
                if not inside:
                    raise BadObjectState(path)
                remove(inside)
                continue
            parents = {p for p in present if path.startswith(p + "/")}  # a file where a directory must go
            remove(inside | parents)
            if change.mode == "040000":  # graft every entry of the tree under `path`
                for entry in git.list_tree_recursive(change.oid):
                    pending.append(f"{entry.mode} {entry.oid}\t{path}/{entry.path}")
                    present.add(f"{path}/{entry.path}")
            else:
                pending.append(f"{change.mode} {change.oid}\t{path}")
                present.add(path)
        flush()
        return git.git("write-tree", env=env).stdout.decode().strip()
