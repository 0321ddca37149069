"""Tokenizers: one token per byte, or a byte-level BPE in the Hugging Face `tokenizers` format.

Either way every byte sequence has an encoding (BPE starts from the 256 byte symbols, so nothing is ever
unknown), and every token stands for a fixed run of bytes (`token_bytes`). That is what makes bits per
byte exact for any tokenizer: evaluation sums the nats over the predicted tokens and divides by the bytes
those tokens stand for, so a model with 4,096 tokens and one with 256 are compared on the same text.

A BPE is trained once, on the training split, when a lineage starts; it travels inside every checkpoint
of that lineage (`Tokenizer.to_json`), so weights and the tokenizer they were trained with can never be
separated, and later text (edited, grown) is encoded with the lineage's own merges. Its id carries a
hash of its JSON, so two lineages' tokenizers are never mistaken for one another.

Text is decoded as UTF-8 before a BPE sees it (the Rust library takes strings): a byte that is not
UTF-8 becomes U+FFFD. Training text is text; the byte tokenizer keeps binary exact.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import Protocol

import torch
from torch import Tensor

BYTES_ID = "bytes-v1"  # vocab 256; token = byte value
BPE_KIND = "bpe-v1"
MAX_VOCAB = 65_536
ENCODE_CHUNK = 1 << 16  # bytes per piece handed to the library's parallel batch encoder
LEARN_FROM_BYTES = 1 << 20  # a BPE learns from at most this much of the split, spread over all of it
LEARN_WINDOW = 1 << 16


class Tokenizer(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def vocab_size(self) -> int: ...
    def encode(self, data: bytes) -> Tensor: ...
    def decode(self, ids: Sequence[int] | Tensor) -> bytes: ...
    @property
    def token_bytes(self) -> Tensor: ...  # float32 (vocab,): bytes each token stands for
    def to_json(self) -> str | None: ...  # what a checkpoint carries (None: nothing to carry)
    def hf_json(self) -> str: ...  # the `tokenizers` document an export writes as tokenizer.json


class ByteTokenizer:
    """Token = byte value. Encoding is a view of the bytes: no library, no copy beyond one."""

    id = BYTES_ID
    vocab_size = 256

    def encode(self, data: bytes) -> Tensor:
        return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)

    def decode(self, ids: Sequence[int] | Tensor) -> bytes:
        return bytes(int(i) for i in (ids.tolist() if isinstance(ids, Tensor) else ids))

    @cached_property
    def token_bytes(self) -> Tensor:
        return torch.ones(256, dtype=torch.float32)

    def to_json(self) -> str | None:
        return None

    def hf_json(self) -> str:
        """The same tokenizer as a `tokenizers` JSON (for export): byte-level BPE without merges, ids = bytes."""
        to_char = byte_to_char()
        vocab = {to_char[b]: b for b in range(256)}
        return json.dumps(_bpe_document(vocab, []))


BYTES = ByteTokenizer()


class BPETokenizer:
    """A byte-level BPE from a `tokenizers` JSON document (trained here, or a GPT-2 model's).

    `vocab_size` may exceed the document's vocabulary: a BPE trained on little text stops early, and the
    model keeps the size the profile asked for (the extra ids never occur in data).
    """

    def __init__(self, document: str, vocab_size: int | None = None) -> None:
        from tokenizers import Tokenizer as HFTokenizer  # imported here: the byte tokenizer needs no library

        try:
            parsed = json.loads(document)
            self._tok = HFTokenizer.from_str(document)
        except Exception as exc:  # the library raises plain Exceptions for a bad document
            raise ValueError(f"tokenizer is not a valid tokenizers JSON document: {exc}") from exc
        model = parsed.get("model") or {}
        if model.get("type") != "BPE" or (parsed.get("pre_tokenizer") or {}).get("type") != "ByteLevel":
            raise ValueError("tokenizer must be a byte-level BPE (GPT-2's kind): every byte needs an encoding")
        self._document = document
        own = self._tok.get_vocab_size(with_added_tokens=True)
        self.vocab_size = own if vocab_size is None else vocab_size
        if not 256 < self.vocab_size <= MAX_VOCAB or self.vocab_size < own:
            raise ValueError(f"tokenizer vocabulary of {own} (model size {self.vocab_size}) is outside "
                             f"257..{MAX_VOCAB}")
        self.id = f"{BPE_KIND}:{self.vocab_size}:{hashlib.sha256(document.encode()).hexdigest()[:16]}"
        self._bytes_of = self._token_byte_strings()

    def _token_byte_strings(self) -> list[bytes]:
        to_byte = {c: b for b, c in byte_to_char().items()}
        out = [b""] * self.vocab_size
        for token, index in self._tok.get_vocab(with_added_tokens=True).items():
            if index < self.vocab_size:  # a special token is its own text; a byte-level one, its bytes
                out[index] = bytes(to_byte[c] for c in token) if all(c in to_byte for c in token) else token.encode()
        return out

    def encode(self, data: bytes) -> Tensor:
        text = data.decode("utf-8", "replace")
        pieces = list(_chunks(text, ENCODE_CHUNK))
        ids = [i for enc in self._tok.encode_batch(pieces, add_special_tokens=False) for i in enc.ids]
        return torch.tensor(ids, dtype=torch.int32) if ids else torch.empty(0, dtype=torch.int32)

    def decode(self, ids: Sequence[int] | Tensor) -> bytes:
        return b"".join(self._bytes_of[int(i)] for i in (ids.tolist() if isinstance(ids, Tensor) else ids))

    @cached_property
    def token_bytes(self) -> Tensor:
        return torch.tensor([len(b) for b in self._bytes_of], dtype=torch.float32)

    def to_json(self) -> str:
        return self._document

    def hf_json(self) -> str:
        return self._document


def train_bpe(text: bytes, vocab_size: int) -> BPETokenizer:
    """A byte-level BPE of `vocab_size` tokens learnt from `text` (the training split): deterministic for
    the same text. Learning costs with the length of the words, not only the text (0.7 s for 0.4 MB of
    prose, a minute for 0.6 MB without spaces), so it reads at most LEARN_FROM_BYTES, in windows spread
    evenly over the split: bounded, and still every part of the text has its say."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if not 256 < vocab_size <= MAX_VOCAB:
        raise ValueError(f"vocab_size must be in 257..{MAX_VOCAB}, got {vocab_size}")
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        min_frequency=2, special_tokens=[],
    )
    tok.train_from_iterator(_chunks(learning_sample(text).decode("utf-8", "replace"), ENCODE_CHUNK), trainer)
    return BPETokenizer(tok.to_str(), vocab_size)


def learning_sample(text: bytes, limit: int = LEARN_FROM_BYTES, window: int = LEARN_WINDOW) -> bytes:
    """All of `text` when it is at most `limit` bytes, else limit // window windows spread evenly over it."""
    if len(text) <= limit:
        return text
    count = max(limit // window, 2)
    starts = [round(i * (len(text) - window) / (count - 1)) for i in range(count)]
    return b"".join(text[s:s + window] for s in starts)


def from_checkpoint(tokenizer_id: str, document: str | None) -> Tokenizer:
    """The tokenizer a checkpoint was trained with, from its payload's id and JSON."""
    if tokenizer_id == BYTES_ID:
        return BYTES
    if document is None:
        raise ValueError(f"checkpoint names tokenizer {tokenizer_id!r} but does not carry it")
    kind, _, rest = tokenizer_id.partition(":")
    size = rest.partition(":")[0]
    if kind != BPE_KIND or not size.isdigit():
        raise ValueError(f"checkpoint names an unknown tokenizer {tokenizer_id!r}")
    tok = BPETokenizer(document, int(size))
    if tok.id != tokenizer_id:
        raise ValueError(f"checkpoint's tokenizer is {tok.id}, not the {tokenizer_id} it names")
    return tok


def bpe_family(vocab_size: int) -> str:
    """The prefix every id of a BPE of this size starts with: what a profile's `tokenizer: bpe` accepts."""
    return f"{BPE_KIND}:{vocab_size}:"


def byte_to_char() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (openai/gpt-2 encoder.py `bytes_to_unicode`): the alphabet
    byte-level BPE vocabularies are written in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _bpe_document(vocab: dict[str, int], merges: list[str]) -> dict[str, object]:
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


def _chunks(text: str, size: int) -> Iterable[str]:
    """Pieces of about `size` characters, cut after a newline, else before a space, where there is one: both
    are where GPT-2's pre-tokenizer starts a word anyway, so the pieces encode as the whole text would."""
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            cut = text.rfind("\n", start, end) + 1
            if cut <= start:
                cut = text.rfind(" ", start + 1, end)
            end = cut if cut > start else end
        yield text[start:end]
        start = end
