"""Carry a trained network over to another tokenizer without throwing its learning away.

Fast vocabulary transfer (Gee et al. 2022, "Fast Vocabulary Transfer for Language Model Compression"):
every layer but the token embedding keeps its weights, and each token of the new vocabulary starts as the
mean of the old embeddings of the old tokens that spell its bytes. The embedding is tied to the output
projection (model.py), so the one matrix serves both ends. What the transformer learnt about text (how
words follow one another, what positions mean) stays; only the units it reads and writes change, and a
short healing run lets it adjust to them (workers/session/migration.py decides whether the result is kept).

`transfer_payload` carries a whole training state the same way, the optimizer's moments and the running
average included, so the moved lineage goes on where the old one stood: no warmup, no fresh optimizer
stepping its carried weights at the full rate with no idea of their scale, and its iterations go on counting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from workers.trainer.model import ModelConfig
from workers.trainer.tokenizer import Tokenizer
from workers.trainer.train import optimizer_order

EMBEDDING = "transformer.wte.weight"
OUTPUT = "lm_head.weight"
POSITIONS = "transformer.wpe.weight"


def transfer_vocabulary(
    weights: Mapping[str, Tensor], old: Tokenizer, new: Tokenizer, new_config: ModelConfig,
) -> dict[str, Tensor]:
    """The weights of a network of `new_config` (the old shape but for `vocab_size`) that reads and writes
    `new`'s tokens, from `weights` trained on `old`'s. ValueError when the other layers do not fit."""
    return _weights(weights, respell(old, new), old, new_config)


def transfer_payload(
    payload: Mapping[str, Any], old: Tokenizer, new: Tokenizer, new_config: ModelConfig,
) -> dict[str, Any]:
    """A payload (workers/trainer/checkpoint.py) of `new_config` on `new`'s tokens that goes on from
    `payload`: served and live weights and the embedding's optimizer moments respelt, everything else kept.
    Its corpus fingerprint is cleared: the text is read in other tokens, so the sampler starts a new stream."""
    spelling = respell(old, new)
    out = dict(payload)
    out["model"] = _weights(payload["model"], spelling, old, new_config)
    online = payload.get("online")
    if online is not None:
        if not (isinstance(online, Mapping) and isinstance(online.get("model"), Mapping)):
            raise ValueError("the checkpoint's 'online' holds no model state")
        out["online"] = {**online, "model": _weights(online["model"], spelling, old, new_config)}
    old_config = ModelConfig.from_dict(payload["model_config"])
    out["optimizer"] = _moments(payload["optimizer"], optimizer_order(old_config).index(EMBEDDING), spelling,
                                tuple(payload["model"][EMBEDDING].shape))
    out["model_config"] = new_config.to_dict()
    out["tokenizer"] = new.id
    out.pop("tokenizer_json", None)
    if (document := new.to_json()) is not None:
        out["tokenizer_json"] = document
    out["corpus_fingerprint"] = ""
    return out


def respell(old: Tokenizer, new: Tokenizer) -> list[list[int]]:
    """For each of `new`'s tokens, the old tokens that spell its bytes (empty for an id that stands for none)."""
    spell = Speller(old)
    return [spell(new.decode([token])) for token in range(new.vocab_size)]


def _rows(old_rows: Tensor, spelling: list[list[int]]) -> Tensor:
    """One row per new token: the mean of the old rows that spell it, else the mean of all of them."""
    old_rows = old_rows.float()
    fallback = old_rows.mean(dim=0)  # for ids that stand for no bytes (unused ids past a small vocabulary)
    rows = torch.empty(len(spelling), old_rows.size(1))
    for token, ids in enumerate(spelling):
        rows[token] = old_rows[ids].mean(dim=0) if ids else fallback
    return rows


def _weights(
    weights: Mapping[str, Tensor], spelling: list[list[int]], old: Tokenizer, new_config: ModelConfig,
) -> dict[str, Tensor]:
    old_rows = weights[EMBEDDING]
    if old_rows.size(0) != old.vocab_size:
        raise ValueError(f"the embedding has {old_rows.size(0)} rows, the old tokenizer {old.vocab_size} tokens")
    if old_rows.size(1) != new_config.n_embd:
        raise ValueError(f"the embedding is {old_rows.size(1)} wide, the new network {new_config.n_embd}")
    out = {name: tensor.clone() for name, tensor in weights.items() if name not in (EMBEDDING, OUTPUT)}
    rows = _rows(old_rows, spelling)
    rows = rows.to(old_rows.dtype if old_rows.is_floating_point() else torch.float32)
    out[EMBEDDING] = rows
    out[OUTPUT] = rows  # tied: one tensor, as the model holds it
    positions = out.get(POSITIONS)
    if positions is not None and positions.size(0) != new_config.block_size:
        raise ValueError(f"the position embedding has {positions.size(0)} rows, the new context "
                         f"{new_config.block_size}")
    return out


def _moments(optimizer: Any, embedding: int, spelling: list[list[int]], rows: tuple[int, ...]) -> dict[str, Any]:
    """The optimizer's saved state with the embedding's per-row moments respelt like its rows (a mean of
    second moments is a fair guess of a new row's gradient scale); other parameters' moments as they were.
    A payload comes from a store a repository's sessions write: a state of another shape is a ValueError."""
    saved = optimizer.get("state") if isinstance(optimizer, Mapping) else None
    if not isinstance(saved, Mapping) or not all(isinstance(v, Mapping) for v in saved.values()):
        raise ValueError("the checkpoint's optimizer state is not a state dict")
    state = {k: dict(v) for k, v in saved.items()}
    moments = state.get(embedding)
    for key, value in (moments or {}).items():
        if isinstance(value, Tensor) and value.dim() > 0:
            if tuple(value.shape) != rows:
                raise ValueError(f"the checkpoint's optimizer moment {key!r} of the embedding is "
                                 f"{tuple(value.shape)}, its rows {rows}")
            moments[key] = _rows(value, spelling).to(value.dtype)
    return {**optimizer, "state": state}


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
