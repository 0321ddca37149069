"""Selecting training text from a repository snapshot."""

import io
import tarfile
import time

import pytest

from workers.session.snapshot import SnapshotError, files_from_tarball, select_files


def tarball(files: dict[str, bytes], top: str = "octo-demo-abc1234") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path, content in files.items():
            info = tarfile.TarInfo(f"{top}/{path}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_github_tarball_top_folder_is_stripped() -> None:
    files = files_from_tarball(tarball({"a.md": b"x", "docs/b.md": b"y"}))
    assert files == {"a.md": b"x", "docs/b.md": b"y"}


def test_garbage_is_a_clear_error() -> None:
    with pytest.raises(SnapshotError, match="could not be read"):
        files_from_tarball(b"not a tarball")


def test_globs_select_and_progress_dir_is_never_training_data() -> None:
    files = {p: b"" for p in ["README.md", "echo/a.md", "echo/deep/b.md", "src/x.py", ".training-progress/r/x.md"]}
    assert list(select_files(files, ["**/*.md"], exclude_dirs=[".training-progress"])) == [
        "README.md", "echo/a.md", "echo/deep/b.md",
    ]
    assert list(select_files(files, ["echo/**/*.md"])) == ["echo/a.md", "echo/deep/b.md"]
    assert list(select_files(files, ["*.md"])) == ["README.md"]


def test_globs_are_gitignore_patterns_anchored_at_the_root() -> None:
    files = {p: b"" for p in ["README.md", "notes/a.md", "notes/old/b.md", "x/notes/c.md", "notes/draft.md"]}
    assert list(select_files(files, ["notes/"])) == ["notes/a.md", "notes/draft.md", "notes/old/b.md"]
    assert list(select_files(files, ["**/*.md", "!notes/draft.md"])) == [
        "README.md", "notes/a.md", "notes/old/b.md", "x/notes/c.md"]
    assert list(select_files(files, ["/notes/*.md"])) == ["notes/a.md", "notes/draft.md"]


def test_a_backtracking_glob_costs_microseconds() -> None:
    """With Python's re this pattern against this name took 42 s; RE2 never backtracks."""
    files = {"a" * 43: b"", "docs/" + "a" * 200 + ".md": b""}
    started = time.perf_counter()
    assert select_files(files, ["*a*a*a*a*a*a*a*a*a*a*b", "**/*a*a*a*a*a*a*a*a*a*a*a*a*b.md"]) == {}
    assert time.perf_counter() - started < 5.0  # a guard against the exponential case, not a speed target
