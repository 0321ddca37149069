"""`data.include`: gitignore-style globs anchored at the repository root, matched by RE2.

The patterns come from the repository, so matching must cost time linear in the path whatever they say:
pathspec's RE2 backend compiles them to automata that never backtrack (`*a*a*a*a*a*a*a*a*a*a*b` against a
long name is microseconds, where Python's `re` takes minutes). Anchoring keeps the meaning every earlier
config had: `*.md` is the top folder's Markdown, `**/*.md` all of it, `docs/` everything below docs.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import pathspec

MAX_PATTERNS = 64
MAX_PATTERN_CHARS = 256


def _anchored(pattern: str) -> str:
    negated = pattern.startswith("!")
    body = pattern[1:] if negated else pattern
    return ("!" if negated else "") + (body if body.startswith("/") else f"/{body}")


def check_pattern(pattern: str) -> str:
    """The pattern itself, or a ValueError saying what is wrong with it."""
    if not pattern.strip() or len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"a glob must have 1 to {MAX_PATTERN_CHARS} characters, got {len(pattern)}")
    if any(ord(c) < 32 for c in pattern) or pattern.lstrip("!").startswith("#"):
        raise ValueError(f"{pattern!r} is not a glob (control characters, or a comment)")
    try:
        _compile((pattern,))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{pattern!r} is not a glob: {exc}") from exc
    return pattern


@lru_cache(maxsize=256)
def _compile(patterns: tuple[str, ...]) -> pathspec.PathSpec:
    return pathspec.PathSpec.from_lines("gitignore", [_anchored(p) for p in patterns], backend="re2")


def matcher(patterns: Iterable[str]) -> pathspec.PathSpec:
    """One compiled spec for all of `patterns` (later `!` patterns take files back out)."""
    return _compile(tuple(patterns))
