"""Which tokenizer a session encodes its text with: the profile says the kind, the lineage says which one.

`tokenizer: bytes` needs nothing. `tokenizer: bpe` continues the BPE of the best stored checkpoint whose
tokenizer is a BPE of the profile's size and whose network is the profile's: that tokenizer is read from
the checkpoint itself (it travels inside every payload), so weights are never encoded with merges they
were not trained on. Without such a checkpoint (a new lineage, or `fresh`), a new BPE is learnt from
today's training split. Two BPE lineages of one size (two fresh starts) are told apart by the hash in
their ids; the one whose best figure (bits per byte, comparable across tokenizers) is lower goes on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from app.repo_config import Profile
from workers.session import registry as reg
from workers.session.store import CheckpointStore, StoreError
from workers.trainer.checkpoint import load_state
from workers.trainer.data import SplitText
from workers.trainer.tokenizer import BYTES, Tokenizer, bpe_family, from_checkpoint, train_bpe

log = logging.getLogger(__name__)


@dataclass
class TokenizerChoice:
    tokenizer: Tokenizer
    loaded: dict[str, dict[str, Any]] = field(default_factory=dict)  # checkpoint id -> payload read on the way


def choose_tokenizer(
    store: CheckpointStore, registry: reg.Registry, profile: Profile, shape_sha256: str, split: SplitText, *,
    fresh: bool, within: str, notes: list[str], unusable: set[str],
) -> TokenizerChoice:
    """The tokenizer for this session (see the module docstring); a checkpoint that cannot be read is
    skipped with a note and added to `unusable`, as choosing a resume point does."""
    if profile.tokenizer == "bytes":
        return TokenizerChoice(BYTES)
    family = bpe_family(profile.vocab_size)
    candidates = [] if fresh else sorted(
        (e for e in registry.values() if e.restorable and _is_family(e, family, shape_sha256)),
        key=lambda e: e.latest_loss,
    )
    for entry in candidates:
        assert entry.storage is not None and entry.fingerprint is not None
        try:
            payload = load_state(store.get(entry.storage, within=within))
            tokenizer = from_checkpoint(str(payload.get("tokenizer")), payload.get("tokenizer_json"))
            if tokenizer.id != entry.fingerprint.tokenizer:
                raise ValueError(f"its weights carry tokenizer {tokenizer.id}, the registry says "
                                 f"{entry.fingerprint.tokenizer}")
        except (StoreError, ValueError) as exc:
            unusable.add(entry.checkpoint_id)
            notes.append(f"skipped {entry.checkpoint_id}: {exc}")
            continue
        return TokenizerChoice(tokenizer, {entry.checkpoint_id: payload})
    tokenizer = train_bpe(split.train, profile.vocab_size)
    notes.append(f"learnt a byte-level BPE of {profile.vocab_size} tokens ({tokenizer.id}) from the training split "
                 f"({len(split.train):,} bytes) for a new lineage")
    log.info("trained tokenizer %s on %d bytes", tokenizer.id, len(split.train))
    return TokenizerChoice(tokenizer)


def _is_family(entry: reg.CheckpointEntry, family: str, shape_sha256: str) -> bool:
    lineage = reg.lineage_of(entry)
    return lineage is not None and lineage.tokenizer.startswith(family) and lineage.shape_sha256 == shape_sha256
