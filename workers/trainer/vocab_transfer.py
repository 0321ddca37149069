"""Carry a trained network over to another tokenizer without throwing its learning away.

Fast vocabulary transfer (Gee et al. 2022, "Fast Vocabulary Transfer for Language Model Compression"):
every layer but the token embedding keeps its weights, and each token of the new vocabulary starts as the
mean of the old embeddings of the old tokens that spell its bytes. The embedding is tied to the output
projection (model.py), so the one matrix serves both ends. What the transformer learnt about text (how
words follow one another, what positions mean) stays; only the units it reads and writes change, and a
short healing run lets it adjust to them (workers/session/migration.py decides whether the result is kept).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from workers.trainer.model import ModelConfig
from workers.trainer.tokenizer import Tokenizer

EMBEDDING = "transformer.wte.weight"
OUTPUT = "lm_head.weight"
POSITIONS = "transformer.wpe.weight"


def transfer_vocabulary(
    weights: Mapping[str, Tensor], old: Tokenizer, new: Tokenizer, new_config: ModelConfig,
) -> dict[str, Tensor]:
    """The weights of a network of `new_config` (the old shape but for `vocab_size`) that reads and writes
    `new`'s tokens, from `weights` trained on `old`'s. ValueError when the other layers do not fit."""
    old_rows = weights[EMBEDDING].float()
    if old_rows.size(0) != old.vocab_size:
        raise ValueError(f"the embedding has {old_rows.size(0)} rows, the old tokenizer {old.vocab_size} tokens")
    if old_rows.size(1) != new_config.n_embd:
        raise ValueError(f"the embedding is {old_rows.size(1)} wide, the new network {new_config.n_embd}")
    fallback = old_rows.mean(dim=0)  # for ids that stand for no bytes (unused ids past a small vocabulary)
    spell = Speller(old)
    rows = torch.empty(new.vocab_size, new_config.n_embd)
    for token in range(new.vocab_size):
        ids = spell(new.decode([token]))
        rows[token] = old_rows[ids].mean(dim=0) if ids else fallback
    out = {name: tensor.clone() for name, tensor in weights.items() if name not in (EMBEDDING, OUTPUT)}
    rows = rows.to(old_rows.dtype if weights[EMBEDDING].is_floating_point() else torch.float32)
    out[EMBEDDING] = rows
    out[OUTPUT] = rows  # tied: one tensor, as the model holds it
    positions = out.get(POSITIONS)
    if positions is not None and positions.size(0) != new_config.block_size:
        raise ValueError(f"the position embedding has {positions.size(0)} rows, the new context "
                         f"{new_config.block_size}")
    return out


class Speller:
    """The old tokens that spell a run of bytes, longest first from the left. Not the old tokenizer's own
    encoding: a BPE encodes text, and a new token may be part of a character, which only its bytes spell."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.ids: dict[bytes, int] = {}
        for token in range(tokenizer.vocab_size):
            spelled = tokenizer.decode([token])
            if spelled:
                self.ids.setdefault(spelled, token)
        self.longest = max(map(len, self.ids), default=1)

    def __call__(self, data: bytes) -> list[int]:
        out, at = [], 0
        while at < len(data):
            for size in range(min(self.longest, len(data) - at), 0, -1):
                token = self.ids.get(data[at:at + size])
                if token is not None:
                    out.append(token)
                    at += size
                    break
            else:
                at += 1  # a byte the old vocabulary lacks (never with a byte-level one): it adds nothing
        return out
