"""Training text from a repository snapshot: unpack a tarball, select files by the config's globs. Pure."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Mapping

from app.globs import matcher

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


def select_files(
    files: Mapping[str, bytes], include: Iterable[str], *, exclude_dirs: Iterable[str] = ()
) -> dict[str, bytes]:
    """The files the include globs select (app/globs.py), outside the excluded folders (Retrain's own
    progress files)."""
    spec = matcher(include)
    excluded = tuple(d.strip("/") + "/" for d in exclude_dirs)
    return {
        path: content
        for path, content in sorted(files.items())
        if not path.startswith(excluded) and spec.match_file(path)
    }
