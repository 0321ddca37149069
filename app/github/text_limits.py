"""How much text GitHub takes, and cutting text to fit it. Pure (no I/O), so the texts in `app/writing/`
size themselves without importing the client, and the client cuts whatever still arrives too long."""

from __future__ import annotations

# GitHub refuses longer text with a 422: a comment's body (characters), a check run's output.summary and
# output.text (UTF-8 bytes).
MAX_COMMENT_CHARS = 65536
MAX_CHECK_TEXT_BYTES = 65535
CUT_NOTE = "\n\n... (cut: GitHub takes at most {limit:,} {unit} here)"


def fit(text: str, limit: int, *, in_bytes: bool = False, room: int = 0) -> str:
    """`text` cut to GitHub's limit, saying so: a long report (many notes, a long config error) still
    arrives, where the whole of it would be refused and the person told nothing. Comments count characters;
    check-run text counts UTF-8 bytes ("summary exceeds a maximum bytesize of 65535"). `room`: what the
    caller adds after it (a marker). A code fence left open by the cut is closed, so the note shows."""
    size = (lambda s: len(s.encode())) if in_bytes else len
    if size(text) + room <= limit:
        return text
    note = CUT_NOTE.format(limit=limit, unit="bytes" if in_bytes else "characters")
    keep = limit - room - size(note) - len("\n```")
    cut = text.encode()[:keep].decode(errors="ignore") if in_bytes else text[:keep]
    if cut.count("```") % 2:
        cut += "\n```"
    return cut + note
