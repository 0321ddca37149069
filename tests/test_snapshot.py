"""Choosing training text from a tree listing: globs, modes, the per-file and total caps."""

import time

import pytest

from app.errors import SessionError
from workers.session.snapshot import MAX_FILE_BYTES, MAX_TOTAL_BYTES, SnapshotTooLarge, TreeFile, pick, selection


def chosen(paths: list[str], include: list[str], exclude_dirs: tuple[str, ...] = ()) -> list[str]:
    selected = selection(include, exclude_dirs=exclude_dirs)
    return [p for p in sorted(paths) if selected(p)]


def test_globs_select_and_progress_dir_is_never_training_data() -> None:
    paths = ["README.md", "echo/a.md", "echo/deep/b.md", "src/x.py", ".training-progress/r/x.md"]
    assert chosen(paths, ["**/*.md"], exclude_dirs=(".training-progress",)) == [
        "README.md", "echo/a.md", "echo/deep/b.md",
    ]
    assert chosen(paths, ["echo/**/*.md"]) == ["echo/a.md", "echo/deep/b.md"]
    assert chosen(paths, ["*.md"]) == ["README.md"]


def test_globs_are_gitignore_patterns_anchored_at_the_root() -> None:
    paths = ["README.md", "notes/a.md", "notes/old/b.md", "x/notes/c.md", "notes/draft.md"]
    assert chosen(paths, ["notes/"]) == ["notes/a.md", "notes/draft.md", "notes/old/b.md"]
    assert chosen(paths, ["**/*.md", "!notes/draft.md"]) == [
        "README.md", "notes/a.md", "notes/old/b.md", "x/notes/c.md"]
    assert chosen(paths, ["/notes/*.md"]) == ["notes/a.md", "notes/draft.md"]


def test_a_backtracking_glob_costs_microseconds() -> None:
    """With Python's re this pattern against this name took 42 s; RE2 never backtracks."""
    paths = ["a" * 43, "docs/" + "a" * 200 + ".md"]
    started = time.perf_counter()
    assert chosen(paths, ["*a*a*a*a*a*a*a*a*a*a*b", "**/*a*a*a*a*a*a*a*a*a*a*a*a*b.md"]) == []
    assert time.perf_counter() - started < 5.0  # a guard against the exponential case, not a speed target


PATHS = ["README.md", "notes/a.md", "notes/old/b.md", "notes /x.md", "x.md/inner.txt", "docs/api/v1/ref.md",
         "docs/guide.txt", "src/notes/c.md", ".training-progress/run/a.md", "a/b/c/d.md", "data/[x]/y.md"]


@pytest.mark.parametrize("include", [
    ["notes/**/*.md"], ["*.md"], ["notes/"], ["notes"], ["notes "], ["/docs/api/*/ref.md"], ["docs/**"],
    ["**/*.md", "!notes/**"], ["a/b*/c/*.md"], ["data/\\[x]/y.md"], ["x.md"], ["docs/api/v1/ref.md", "src/"],
])
def test_a_folder_is_skipped_only_when_it_cannot_hold_a_selected_file(include: list[str]) -> None:
    selected = selection(include, exclude_dirs=(".training-progress",))
    for path in PATHS:
        if selected(path):
            parts = path.split("/")
            assert all(selected.may_hold("/".join(parts[:i])) for i in range(1, len(parts))), (include, path)


def test_folders_outside_every_pattern_and_the_progress_folder_are_skipped() -> None:
    selected = selection(["notes/**/*.md", "docs/api/*.md", "!docs/api/old.md"], exclude_dirs=(".training-progress",))
    assert [f for f in ("notes", "notes/old", "docs", "docs/api", "docs/api/v1") if selected.may_hold(f)] == [
        "notes", "notes/old", "docs", "docs/api", "docs/api/v1"]
    assert not any(selected.may_hold(f) for f in ("src", "docs/guide", "notesx", ".training-progress",
                                                   ".training-progress/run", ".github"))


def entry(path: str, size: int = 10, mode: str = "100644") -> TreeFile:
    return TreeFile(path, mode, "0" * 40, size)  # pick() never looks at the sha


def test_only_regular_files_within_the_file_cap_are_picked() -> None:
    listing = [entry("notes/z.md"), entry("notes/run.md", mode="100755"), entry("notes/link.md", mode="120000"),
               entry("notes/huge.md", MAX_FILE_BYTES + 1), entry("notes/edge.md", MAX_FILE_BYTES),
               entry("other.md")]
    picked = pick(listing, selection(["notes/"]))
    assert [e.path for e in picked] == ["notes/edge.md", "notes/run.md", "notes/z.md"]


def test_a_selection_over_the_cap_names_its_size_the_cap_and_the_fix() -> None:
    listing = [entry(f"notes/{i}.md", 400) for i in range(3)] + [entry("big/unselected.bin", 10**9)]
    assert len(pick(listing, selection(["notes/"]), max_bytes=1200)) == 3
    with pytest.raises(SnapshotTooLarge) as raised:
        pick(listing, selection(["notes/"]), max_bytes=1199)
    assert isinstance(raised.value, SessionError)  # shown to the requester as it is
    assert str(raised.value) == (
        "the 3 files data.include selects are 1,200 bytes together, over the 1,199 bytes a session reads; narrow "
        "data.include in .github/retrain.yml (a folder, or `!` patterns to leave large files out)")
    assert MAX_TOTAL_BYTES == 256 * 1024 * 1024


def test_more_selected_files_than_a_session_fetches_is_refused_before_any_request() -> None:
    from workers.session.snapshot import MAX_FILES

    listing = [entry(f"notes/{i}.md", 1) for i in range(MAX_FILES + 1)]
    assert len(pick(listing[:-1], selection(["notes/"]))) == MAX_FILES
    with pytest.raises(SnapshotTooLarge, match=f"selects {MAX_FILES + 1:,} files, more than the {MAX_FILES:,}"):
        pick(listing, selection(["notes/"]))
