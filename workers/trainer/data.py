"""Byte-level tokenizer and a validation split that stays put while the repository lives.

The old workflow validated on its training text (val loss 0.0003 was memorisation). Here the split is
disjoint, and it is stable as the text is edited and grows, because which side a piece of text lands on
is a property of that text alone:

- Each file is cut into pieces at content-defined points: paragraph breaks chosen by the paragraph's own
  hash (a long paragraph is cut at lines, a long line at fixed lengths). An edit changes only the piece it
  falls in, never where the other pieces of the file begin.
- A piece is held out when the hash of its bytes falls below `val_fraction`. So a held-out piece stays
  held out for as long as its text exists, whatever other files are added, edited, renamed or removed,
  and identical text (a copied file, a repeated licence) always lands on one side. The share comes out
  near `val_fraction` by the law of large numbers, however the bytes are spread over files: one large
  file is many pieces.
- A corpus of fewer than MIN_RULE_PIECES pieces (about 40 KB of prose) is too small for that: its pieces
  are held out in order of their hash until the share is met exactly, the last one split inside (never
  one with a twin elsewhere). That order is fixed too, but a growing small corpus can move pieces across;
  from MIN_RULE_PIECES on, the hash rule alone decides, and no piece ever moves while it exists.

The split is made on bytes, before any tokenizer sees the text, so it does not depend on the tokenizer;
each side is then encoded with the lineage's tokenizer (workers/trainer/tokenizer.py: bytes, or a BPE
trained on the training side). Nothing is ever downloaded.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from workers.trainer.tokenizer import BYTES, BYTES_ID, Tokenizer

TOKENIZER_ID = BYTES_ID  # the default tokenizer's id
SPLIT_PIECES = "pieces-v1"
MAX_UNIT = 2048  # a paragraph longer than this is cut at lines, a longer line at this length
MAX_PIECE = 4096  # a piece ends at a chosen paragraph break, or here at the latest
BREAK_EVERY = 3  # a paragraph ends its piece when its hash is 0 mod this: pieces of ~3 paragraphs (~500 bytes)
MIN_RULE_PIECES = 64  # from here on the hash rule alone decides (see the module docstring)
EVAL_WINDOWS = 128  # most windows an evaluation reads (see eval_starts)
EVAL_PROTOCOL = f"windows-v1:{EVAL_WINDOWS}"
_PARAGRAPH_END = re.compile(rb"\r?\n(?:[ \t]*\r?\n)+")


@dataclass(frozen=True)
class Corpus:
    """Token ids of both splits, the tokenizer that made them, and where they came from."""

    train: Tensor  # 1-D token ids: uint8 for bytes, int32 for a BPE; batches widen them to int64
    val: Tensor
    train_files: tuple[str, ...]  # files with bytes in train (a file can have pieces on both sides)
    val_files: tuple[str, ...]
    split: str = SPLIT_PIECES
    tokenizer: Tokenizer = BYTES

    def fingerprint(self) -> str:
        """sha256 over the tokenizer, the split (which files where, split sizes) and the bytes.

        Two corpora with the same fingerprint give the same batches, so a checkpoint's sampler position
        means the same thing: provenance, and the condition for restoring the sampler exactly.
        """
        h = hashlib.sha256()
        h.update(f"tokenizer={self.tokenizer.id}\nsplit={self.split}\n".encode())
        for name, files, tokens in (
            ("train", self.train_files, self.train),
            ("val", self.val_files, self.val),
        ):
            h.update(f"{name}.files={len(files)}\n".encode())
            for path in files:
                h.update(path.encode("utf-8", "surrogateescape") + b"\0")
            h.update(f"{name}.tokens={tokens.numel()}\n".encode())
            _hash_tensor(h, tokens)
        return h.hexdigest()

    def train_bytes_per_token(self) -> float:
        """Mean bytes a training token stands for: turns a per-token training loss into nats per byte."""
        if self.tokenizer.id == BYTES_ID:
            return 1.0
        counts = torch.bincount(self.train.long(), minlength=self.tokenizer.vocab_size).double()
        return float((counts * self.tokenizer.token_bytes.double()).sum() / counts.sum().clamp(min=1.0))

    def val_fingerprint(self, block_size: int) -> str:
        """What a validation figure was measured on: the held-out bytes, the tokenizer and the windows read.

        Two val losses compare only when this matches; the training text does not enter it.
        """
        h = hashlib.sha256(f"tokenizer={self.tokenizer.id}\neval={EVAL_PROTOCOL}\nblock={block_size}\n".encode())
        _hash_tensor(h, self.val)
        return h.hexdigest()


def eval_starts(n_tokens: int, block_size: int) -> list[int]:
    """Where the evaluation windows (block_size + 1 tokens each) start: fixed by the split's length alone.

    The whole split in consecutive windows when it has at most EVAL_WINDOWS of them, else EVAL_WINDOWS
    windows spread evenly. No seed, batch size or eval_iters is involved, so editing those never changes
    a figure, and figures on one validation set always compare.
    """
    last = n_tokens - block_size - 1  # the last start that leaves a full window
    if last < 0:
        return []
    consecutive = last // block_size + 1
    if consecutive <= EVAL_WINDOWS:
        return [i * block_size for i in range(consecutive)]
    return [round(i * last / (EVAL_WINDOWS - 1)) for i in range(EVAL_WINDOWS)]


def bits_per_byte(loss: float) -> float:
    """Nats per byte to bits per byte. Evaluation reports nats per byte whatever the tokenizer (train.py
    `_estimate_loss`), so every val loss, and this, compares across tokenizers."""
    return loss / math.log(2)


def _hash_tensor(h: hashlib._Hash, t: Tensor) -> None:
    """Feed a tensor's bytes to `h` in chunks (token ids as stored: uint8 bytes or int32 BPE ids).

    bytes(storage) goes element by element (over a minute for 50 MB), so read the CPU memory directly;
    the tensor is made contiguous and kept alive meanwhile.
    """
    data = t.detach().to("cpu").contiguous()
    ptr, n, chunk = data.data_ptr(), data.numel() * data.element_size(), 1 << 24
    for off in range(0, n, chunk):
        h.update(ctypes.string_at(ptr + off, min(chunk, n - off)))


def _digest(data: bytes, person: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, person=person).digest(), "big")


def min_corpus_bytes(block_size: int, val_fraction: float) -> int:
    """Fewest bytes for which both splits hold more than block_size + 1 tokens."""
    need = block_size + 2
    total = 2 * need
    while total - _val_target(total, val_fraction, block_size) < need:
        total += 1
    return total


def _val_target(total: int, val_fraction: float, block_size: int) -> int:
    return max(math.ceil(total * val_fraction), block_size + 2)


def _units(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of paragraphs (with their trailing blank lines); long ones cut at lines, then lengths."""
    out: list[tuple[int, int]] = []
    start = 0
    ends = [m.end() for m in _PARAGRAPH_END.finditer(data)] + [len(data)]
    for end in ends:
        if end > start:
            out.extend(_cut_long(data, start, end))
        start = end
    return out


def _cut_long(data: bytes, start: int, end: int) -> list[tuple[int, int]]:
    if end - start <= MAX_UNIT:
        return [(start, end)]
    out: list[tuple[int, int]] = []
    while start < end:
        cut = data.rfind(b"\n", start, min(start + MAX_UNIT, end) - 1) + 1
        if cut <= start or end - start <= MAX_UNIT:
            cut = min(start + MAX_UNIT, end)
        out.append((start, cut))
        start = cut
    return out


@dataclass(frozen=True)
class _Piece:
    path: str
    start: int
    end: int
    rank: int  # blake2b of the piece's bytes: decides its side

    @property
    def size(self) -> int:
        return self.end - self.start


def _pieces(path: str, data: bytes) -> list[_Piece]:
    pieces: list[_Piece] = []
    start = 0
    for unit_start, unit_end in _units(data):
        chosen = _digest(data[unit_start:unit_end], b"retrain-break") % BREAK_EVERY == 0
        if chosen or unit_end - start >= MAX_PIECE or unit_end == len(data):
            pieces.append(_Piece(path, start, unit_end, _digest(data[start:unit_end], b"retrain-side")))
            start = unit_end
    return pieces


@dataclass(frozen=True)
class SplitText:
    """Both sides of the split as bytes, before a tokenizer: a new BPE is trained on `train`."""

    train: bytes
    val: bytes
    train_files: tuple[str, ...]
    val_files: tuple[str, ...]


def split_text(files: Mapping[str, bytes], *, val_fraction: float = 0.1, block_size: int) -> SplitText:
    """Split `files` (path -> bytes) into disjoint train and validation text (see the module docstring).

    Empty files carry no text and are left out. Raises ValueError when there is too little text.
    """
    held = held_out(files, val_fraction=val_fraction, block_size=block_size)
    train: dict[str, list[bytes]] = {}
    val: dict[str, list[bytes]] = {}
    for path in sorted(p for p, data in files.items() if data):  # each side reads in file order
        data, at = files[path], 0
        for start, end in held.get(path, []):
            if start > at:
                train.setdefault(path, []).append(data[at:start])
            val.setdefault(path, []).append(data[start:end])
            at = end
        if at < len(data):
            train.setdefault(path, []).append(data[at:])
    return SplitText(
        train=b"".join(b"".join(parts) for parts in train.values()),
        val=b"".join(b"".join(parts) for parts in val.values()),
        train_files=tuple(train), val_files=tuple(val),
    )


def encode_split(split: SplitText, tokenizer: Tokenizer, *, block_size: int) -> Corpus:
    """Encode both sides; ValueError when a side has too few tokens for one window of `block_size`."""
    corpus = Corpus(
        train=tokenizer.encode(split.train), val=tokenizer.encode(split.val),
        train_files=split.train_files, val_files=split.val_files, split=SPLIT_PIECES, tokenizer=tokenizer,
    )
    for name, tokens in (("train", corpus.train), ("validation", corpus.val)):
        if tokens.numel() <= block_size + 1:
            raise ValueError(
                f"training data too small for this tokenizer: the {name} split is {tokens.numel()} tokens "
                f"({tokenizer.id}); block_size {block_size} needs more than {block_size + 1} (more text, a "
                "smaller block_size, or `tokenizer: bytes`)"
            )
    return corpus


def build_corpus(
    files: Mapping[str, bytes], *, val_fraction: float = 0.1, block_size: int, tokenizer: Tokenizer = BYTES,
) -> Corpus:
    """Split `files` and encode both sides with `tokenizer`. Raises ValueError when there is too little text."""
    return encode_split(split_text(files, val_fraction=val_fraction, block_size=block_size), tokenizer,
                        block_size=block_size)


def held_out(files: Mapping[str, bytes], *, val_fraction: float, block_size: int) -> dict[str, list[tuple[int, int]]]:
    """The byte ranges of each file that validation holds, in order (see the module docstring)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}")
    if block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    paths = sorted(p for p, data in files.items() if len(data) > 0)
    total = sum(len(files[p]) for p in paths)
    needed = min_corpus_bytes(block_size, val_fraction)
    if total < needed:
        found = f"found {total} bytes in {len(paths)} non-empty file(s)" if files else "found no files"
        raise ValueError(
            f"training data too small: {found}; need at least {needed} bytes so that both the train "
            f"and validation splits hold more than block_size + 1 = {block_size + 1} tokens "
            f"(val_fraction={val_fraction})"
        )
    pieces = [piece for path in paths for piece in _pieces(path, files[path])]
    ranges: dict[str, list[tuple[int, int]]] = {}
    for piece, n in sorted(_held_out(pieces, total, val_fraction, block_size).items(),
                           key=lambda item: (item[0].path, item[0].start)):
        ranges.setdefault(piece.path, []).append((piece.end - n, piece.end))  # a partly held piece: its tail
    return ranges


def _held_out(pieces: list[_Piece], total: int, val_fraction: float, block_size: int) -> dict[_Piece, int]:
    """Held-out bytes per piece (its tail): by the hash rule, or filled in hash order for a small corpus."""
    threshold = int(val_fraction * 2**64)
    by_rule = {p: p.size for p in pieces if p.rank < threshold}
    held_bytes = sum(by_rule.values())
    if len(pieces) >= MIN_RULE_PIECES and min(held_bytes, total - held_bytes) >= block_size + 2:
        return by_rule
    target = _val_target(total, val_fraction, block_size)
    twins: dict[int, int] = {}
    for piece in pieces:
        twins[piece.rank] = twins.get(piece.rank, 0) + 1
    filled: dict[_Piece, int] = {}
    held_bytes, last_rank = 0, None
    for piece in sorted(pieces, key=lambda p: (p.rank, p.path, p.start)):
        if held_bytes >= target and piece.rank != last_rank:
            break  # twins of the last piece taken go with it: identical text stays on one side
        whole = twins[piece.rank] > 1 or target - held_bytes >= piece.size
        filled[piece] = piece.size if whole else target - held_bytes
        held_bytes, last_rank = held_bytes + filled[piece], piece.rank
    return filled
