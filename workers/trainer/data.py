"""Byte-level tokenizer and an honest train/validation split.

The old workflow validated on its training text (val loss 0.0003 was memorisation). Here the
validation split is disjoint from the training split: whole files when there are several, else the
tail of the text. Tokens are bytes, so nothing is ever downloaded and any text (or binary) works.

Split by file: every path gets a stable rank, sha256(path). Files are taken into validation in rank
order until at least `val_fraction` of the bytes are there (at least one file in each split). The
validation set is therefore always a prefix of one fixed order of paths: adding a file never reorders
the others, and while the split stays by-file, a new file that ranks after the cut-off moves no
validation file back into training (it can only pull the next-ranked training files into validation,
when the byte target grows past the current validation bytes). The fingerprint changes whenever the
split changes, so callers can tell.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

TOKENIZER_ID = "bytes-v1"  # vocab 256; token = byte value
SPLIT_BY_FILE = "by-file"
SPLIT_TAIL_BLOCK = "tail-block"


@dataclass(frozen=True)
class Corpus:
    """Token ids of both splits and where they came from."""

    train: Tensor  # 1-D uint8 token ids (bytes); batches widen them to int64
    val: Tensor
    train_files: tuple[str, ...]  # files with bytes in train (a file can be in both for "tail-block")
    val_files: tuple[str, ...]
    split: str = SPLIT_BY_FILE  # "by-file" or "tail-block"

    def fingerprint(self) -> str:
        """sha256 over the tokenizer, the split (which files where, split sizes) and the bytes.

        Two corpora with the same fingerprint give the same batches, so val losses compare and a
        checkpoint's sampler position means the same thing.
        """
        h = hashlib.sha256()
        h.update(f"tokenizer={TOKENIZER_ID}\nsplit={self.split}\n".encode())
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


def _hash_tensor(h: hashlib._Hash, t: Tensor) -> None:
    """Feed a uint8 tensor's bytes to `h` in chunks.

    numpy is not a dependency and bytes(storage) goes element by element (over a minute for 50 MB),
    so read the CPU memory directly; the tensor is made contiguous and kept alive meanwhile.
    """
    data = t.detach().to("cpu", torch.uint8).contiguous()
    ptr, n, chunk = data.data_ptr(), data.numel(), 1 << 24
    for off in range(0, n, chunk):
        h.update(ctypes.string_at(ptr + off, min(chunk, n - off)))


def _tokens(data: bytes) -> Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def _path_rank(path: str) -> str:
    """A stable per-path rank: it depends on the path only, never on which other files exist."""
    return hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()


def min_corpus_bytes(block_size: int, val_fraction: float) -> int:
    """Fewest bytes for which a tail split leaves both splits more than block_size + 1 tokens."""
    need = block_size + 2
    total = 2 * need
    while total - _tail_size(total, val_fraction, block_size) < need:
        total += 1
    return total


def _tail_size(total: int, val_fraction: float, block_size: int) -> int:
    return max(math.ceil(total * val_fraction), block_size + 2)


def build_corpus(files: Mapping[str, bytes], *, val_fraction: float = 0.1, block_size: int) -> Corpus:
    """Tokenize `files` (path -> bytes) and split them into disjoint train and validation sets.

    Empty files carry no tokens and are left out. Raises ValueError when there is too little text.
    """
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
    if len(paths) >= 2:
        corpus = _split_by_file(files, paths, val_fraction, block_size)
        if corpus is not None:
            return corpus
    return _split_tail(files, paths, val_fraction, block_size)


def _split_by_file(
    files: Mapping[str, bytes], paths: list[str], val_fraction: float, block_size: int
) -> Corpus | None:
    """Hold out whole files; None when either side would be shorter than one block plus its target."""
    total = sum(len(files[p]) for p in paths)
    ranked = sorted(paths, key=_path_rank)
    held: list[str] = []
    held_bytes = 0
    for path in ranked[:-1]:  # the last-ranked file always stays in train
        if held and held_bytes >= val_fraction * total:
            break
        held.append(path)
        held_bytes += len(files[path])
    held_set = set(held)
    val_files = tuple(p for p in paths if p in held_set)
    train_files = tuple(p for p in paths if p not in held_set)
    if min(held_bytes, total - held_bytes) < block_size + 2:
        return None
    return Corpus(
        train=_tokens(b"".join(files[p] for p in train_files)),
        val=_tokens(b"".join(files[p] for p in val_files)),
        train_files=train_files,
        val_files=val_files,
        split=SPLIT_BY_FILE,
    )


def _split_tail(files: Mapping[str, bytes], paths: list[str], val_fraction: float, block_size: int) -> Corpus:
    """Hold out the last contiguous bytes of all files concatenated in path order.

    Used for a single file, and for several files when the held-out files would be too small.
    """
    data = b"".join(files[p] for p in paths)
    cut = len(data) - _tail_size(len(data), val_fraction, block_size)
    train_files: list[str] = []
    val_files: list[str] = []
    start = 0
    for path in paths:
        end = start + len(files[path])
        if start < cut:
            train_files.append(path)
        if end > cut:
            val_files.append(path)
        start = end
    return Corpus(
        train=_tokens(data[:cut]),
        val=_tokens(data[cut:]),
        train_files=tuple(train_files),
        val_files=tuple(val_files),
        split=SPLIT_TAIL_BLOCK,
    )
