"""Training text from a repository snapshot: unpack a tarball, select files by the config's globs. Pure."""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterable, Mapping
from functools import lru_cache

MAX_FILE_BYTES = 8 * 1024 * 1024  # larger files are skipped: training text, not data dumps
MAX_TOTAL_BYTES = 256 * 1024 * 1024


class SnapshotError(ValueError):
    pass


def files_from_tarball(blob: bytes, *, strip_top_dir: bool = True) -> dict[str, bytes]:
    """Regular files of a (gzipped) tar by path; GitHub's tarballs put everything under one top folder."""
    files: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
            for member in tar:
                if not member.isfile() or member.size > MAX_FILE_BYTES:
                    continue
                path = member.name.split("/", 1)[1] if strip_top_dir and "/" in member.name else member.name
                total += member.size
                if total > MAX_TOTAL_BYTES:
                    raise SnapshotError(f"repository snapshot is larger than {MAX_TOTAL_BYTES} bytes")
                extracted = tar.extractfile(member)
                if extracted is not None:
                    files[path] = extracted.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise SnapshotError(f"repository snapshot could not be read: {exc}") from exc
    return files


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """gitignore-like globs: `*` and `?` stay inside a folder, `**/` spans folders."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def select_files(
    files: Mapping[str, bytes], include: Iterable[str], *, exclude_dirs: Iterable[str] = ()
) -> dict[str, bytes]:
    """The files matching any include glob, outside the excluded folders (Retrain's own progress files)."""
    patterns = [glob_regex(p) for p in include]
    excluded = tuple(d.strip("/") + "/" for d in exclude_dirs)
    return {
        path: content
        for path, content in sorted(files.items())
        if not path.startswith(excluded) and any(p.match(path) for p in patterns)
    }
