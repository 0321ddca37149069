"""Which files of a repository a session reads, decided from a tree listing before anything is fetched. Pure.

A session reads only what `data.include` selects, so a large repository costs what its training text
costs. The listing's sizes are summed first: a selection over the cap fails at once with a message that
says how to narrow it, instead of after downloading it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from app.config.globs import matcher
from app.config.limits import Limits
from app.config.repo_config import CONFIG_PATH
from app.errors import SessionError

MAX_FILE_BYTES = 8 * 1024 * 1024  # larger files are skipped: training text, not data dumps
MAX_TOTAL_BYTES = Limits().max_snapshot_bytes  # what one session reads at most (RETRAIN_MAX_SNAPSHOT_BYTES)
MAX_FILES = 5000  # blobs one session fetches: one request each, out of the installation's 5,000 an hour
MAX_FOLDER_LISTINGS = 1000  # folder listings when GitHub truncated the recursive one
REGULAR_MODES = frozenset({"100644", "100755"})  # not symlinks (120000), submodules (160000) or trees
_GLOB_CHARS = frozenset("*?[\\")


class SnapshotTooLarge(SessionError):
    """The selected files together are over the cap; the message says by how much and what to do."""


@dataclass(frozen=True)
class TreeFile:
    """One entry of a tree listing, with its path from the repository root."""

    path: str
    mode: str
    sha: str
    size: int


@dataclass(frozen=True)
class Selection:
    """The paths a session reads: the include globs (app/config/globs.py), outside the excluded folders (Retrain's
    own progress files). Call it with a path; `may_hold` says whether a folder is worth listing."""

    include: tuple[str, ...]
    exclude_dirs: tuple[str, ...] = ()

    def __call__(self, path: str) -> bool:
        return not path.startswith(self._excluded) and matcher(self.include).match_file(path)

    def may_hold(self, folder: str) -> bool:
        """False only when nothing under `folder` can be selected (sound, not exact): every selected path
        starts with the literal leading folders of a positive pattern, since globs are anchored at the root."""
        parts = folder.strip("/").split("/")
        if (folder.strip("/") + "/").startswith(self._excluded):
            return False
        return any(parts[: len(lead)] == lead[: len(parts)] for lead in self._literal_leads)

    @cached_property
    def _excluded(self) -> tuple[str, ...]:
        return tuple(d.strip("/") + "/" for d in self.exclude_dirs)

    @cached_property
    def _literal_leads(self) -> list[list[str]]:
        leads = []
        for pattern in self.include:
            if pattern.startswith("!"):  # a negation only takes files out
                continue
            lead: list[str] = []
            for part in pattern.rstrip(" ").strip("/").split("/"):
                if not part or _GLOB_CHARS & set(part):
                    break
                lead.append(part)
            leads.append(lead)
        return leads


def selection(include: Iterable[str], *, exclude_dirs: Iterable[str] = ()) -> Selection:
    """What `data.include` selects, the progress folder left out."""
    return Selection(tuple(include), tuple(exclude_dirs))


def pick(entries: Iterable[TreeFile], selected: Selection, *, max_bytes: int = MAX_TOTAL_BYTES) -> list[TreeFile]:
    """The selected regular files of a listing, sorted by path, each at most MAX_FILE_BYTES (larger ones
    are skipped); SnapshotTooLarge when together they are over `max_bytes`."""
    chosen = sorted(
        (e for e in entries if e.mode in REGULAR_MODES and e.size <= MAX_FILE_BYTES and selected(e.path)),
        key=lambda e: e.path,
    )
    if len(chosen) > MAX_FILES:
        raise SnapshotTooLarge(
            f"data.include selects {len(chosen):,} files, more than the {MAX_FILES:,} a session reads (each is one "
            f"API request); narrow data.include in {CONFIG_PATH}, or keep the text in fewer, larger files"
        )
    total = sum(e.size for e in chosen)
    if total > max_bytes:
        raise SnapshotTooLarge(
            f"the {len(chosen)} files data.include selects are {total:,} bytes together, over the "
            f"{max_bytes:,} bytes a session reads; narrow data.include in {CONFIG_PATH} (a folder, or `!` "
            "patterns to leave large files out)"
        )
    return chosen
