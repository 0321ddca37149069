"""Untrusted text inside GitHub Markdown: a model writes any byte, a repository any name."""

from __future__ import annotations

import re

BACKTICKS = re.compile(r"`+")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # a comment shows none of these


def code_block(text: str) -> str:
    """`text` fenced so that nothing in it ends the block: the fence is longer than any run of backticks in it,
    and control characters show as U+FFFD."""
    text = CONTROL.sub("\ufffd", text)
    longest = max((len(run) for run in BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    ending = "" if text.endswith("\n") else "\n"  # the block holds the text exactly, no blank line added
    return f"{fence}text\n{text}{ending}{fence}"
