"""Which tokenizer a session encodes its text with: the profile says the kind, the lineage says which one.

`tokenizer: bytes` needs nothing. `tokenizer: bpe` continues the BPE of the best stored checkpoint whose
tokenizer is a BPE of the profile's size and whose network is the profile's: that tokenizer is read from
the checkpoint itself (it travels inside every payload), so weights are never encoded with merges they
were not trained on. Without such a checkpoint (a new lineage, or `fresh`), a new BPE is learnt from
today's training split. Two BPE lineages of one size (two fresh starts, or a lineage and the one it moved
to) are told apart by the hash in their ids. `auto` (the default) weighs the byte lineage and the BPE ones
alike, by bits per byte, which compare across tokenizers; with neither, it learns a BPE when the training
text is large enough and UTF-8 (`bytes_suit_better`), else it starts on bytes. Where several lineages could
go on, the best checkpoint of each is measured on today's validation text first: their own figures may be
on a smaller, older text (a lineage's first sessions on a tiny repository read low). A lineage grows into a
new BPE as its text grows through workers/session/migration.py.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from app.config.limits import Limits, profile_problems
from app.config.repo_config import Profile
from app.errors import SessionError
from workers.session import registry as reg
from workers.session.pretrained import PretrainedSources, read_pretrained
from workers.session.store import CheckpointStore, StoreError
from workers.trainer.checkpoint import check_model_config, load_state
from workers.trainer.data import SplitText, bits_per_byte, encode_split
from workers.trainer.model import ModelConfig
from workers.trainer.tokenizer import BYTES, BYTES_ID, Tokenizer, bpe_family, from_checkpoint, train_bpe
from workers.trainer.train import evaluate

log = logging.getLogger(__name__)


@dataclass
class TokenizerChoice:
    tokenizer: Tokenizer
    loaded: dict[str, dict[str, Any]] = field(default_factory=dict)  # checkpoint id -> payload read on the way
    model_config: ModelConfig | None = None  # init_from: the lineage's network (else the profile's shape)
    initial_weights: dict[str, Tensor] | None = None  # init_from, a new lineage: the pretrained weights


AUTO_BPE_MIN_BYTES = 8 * 1024  # see bytes_suit_better
ShapeOf = Callable[[int], str]  # vocabulary size -> the profile's network shape with it


def families(profile: Profile, shape_of: ShapeOf) -> list[tuple[str, str]]:
    """(tokenizer id, or an id prefix ending in ':', and network shape) of every lineage the profile may
    continue."""
    on_bytes = (BYTES_ID, shape_of(BYTES.vocab_size))
    on_bpe = (bpe_family(profile.vocab_size), shape_of(profile.vocab_size))
    return {"bytes": [on_bytes], "bpe": [on_bpe]}.get(profile.tokenizer, [on_bytes, on_bpe])


def of_family(entry: reg.CheckpointEntry, accepted: list[tuple[str, str]]) -> bool:
    lineage = reg.lineage_of(entry)
    if lineage is None:
        return False
    tok = lineage.tokenizer
    return any(lineage.shape_sha256 == shape and (tok == name or (name.endswith(":") and tok.startswith(name)))
               for name, shape in accepted)


def continuable(registry: reg.Registry, profile: Profile, shape_of: ShapeOf) -> list[reg.CheckpointEntry]:
    """The restorable entries of every lineage this profile may continue: those started from its
    `init_from`, else those of its tokenizer kind and network shape (`families`)."""
    if profile.init_from:
        return started_from(registry, profile.init_from)
    accepted = families(profile, shape_of)
    return [e for e in registry.values() if e.restorable and of_family(e, accepted)]


def choose_tokenizer(
    store: CheckpointStore, registry: reg.Registry, profile: Profile, shape_of: ShapeOf, split: SplitText, *,
    fresh: bool, within: str, notes: list[str], unusable: set[str],
) -> TokenizerChoice:
    """The tokenizer for this session (see the module docstring); a checkpoint that cannot be read is
    skipped with a note and added to `unusable`, as choosing a resume point does."""
    if profile.tokenizer == "bytes":
        return TokenizerChoice(BYTES)
    candidates = [] if fresh else sorted(continuable(registry, profile, shape_of), key=lambda e: e.latest_loss)
    heads = lineage_heads(candidates)
    if len(heads) > 1:  # figures of different lineages were measured on different texts: measure them on today's
        found = _best_on_today(heads[: max(profile.reevaluate, 1)], store, split, within, notes, unusable)
        if found is not None:
            return found
    for entry in candidates:
        if entry.fingerprint is not None and entry.fingerprint.tokenizer == BYTES_ID:
            return TokenizerChoice(BYTES)  # the byte lineage has the best checkpoint: it goes on
        found = _read_lineage(entry, store, within, notes, unusable)
        if found is not None:
            return found
    if profile.tokenizer == "auto":
        why = bytes_suit_better(split.train)
        if why is not None:
            notes.append(f"tokenizer auto: bytes for this new lineage ({why}); set `tokenizer: bpe` to insist")
            return TokenizerChoice(BYTES)
    tokenizer = train_bpe(split.train, profile.vocab_size)
    if profile.tokenizer == "auto" and (short := too_short(split, tokenizer, profile.block_size)) is not None:
        notes.append(f"tokenizer auto: bytes for this new lineage ({short}); set `tokenizer: bpe` to insist")
        return TokenizerChoice(BYTES)
    notes.append(f"learnt a byte-level BPE of {profile.vocab_size} tokens ({tokenizer.id}) from the training split "
                 f"({len(split.train):,} bytes) for a new lineage")
    log.info("trained tokenizer %s on %d bytes", tokenizer.id, len(split.train))
    return TokenizerChoice(tokenizer)


def lineage_heads(candidates: list[reg.CheckpointEntry]) -> list[reg.CheckpointEntry]:
    """The first entry of each lineage in `candidates` (best first), in that order."""
    seen: set[reg.Lineage] = set()
    heads = []
    for entry in candidates:
        lineage = reg.lineage_of(entry)
        if lineage is not None and lineage not in seen:
            seen.add(lineage)
            heads.append(entry)
    return heads


def _best_on_today(heads: list[reg.CheckpointEntry], store: CheckpointStore, split: SplitText, within: str,
                   notes: list[str], unusable: set[str]) -> TokenizerChoice | None:
    """The lineage whose best checkpoint is lowest on today's validation text, each encoded with its own
    tokenizer (bits per byte compare across tokenizers). A lineage's best by its own latest figure stands for
    it: that figure may be on an older, smaller text, which is why it is not compared as it is."""
    measured: list[tuple[float, str, TokenizerChoice]] = []
    for entry in heads:
        found = _read_lineage(entry, store, within, notes, unusable)
        if found is None or found.model_config is None:
            continue
        try:
            corpus = encode_split(split, found.tokenizer, block_size=found.model_config.block_size)
            loss = evaluate(found.model_config, found.loaded[entry.checkpoint_id], corpus)
        except ValueError as exc:
            notes.append(f"could not measure {entry.checkpoint_id} on today's validation text: {exc}")
            continue
        if math.isfinite(loss):
            measured.append((loss, entry.checkpoint_id, found))
    if not measured:
        return None
    measured.sort(key=lambda m: m[0])
    figures = ", ".join(f"{cid} ({choice.tokenizer.id}) {bits_per_byte(loss):.4f}" for loss, cid, choice in measured)
    notes.append(f"tokenizer auto: measured the best checkpoint of {len(measured)} lineages on today's validation "
                 f"text, in bits per byte: {figures}; going on with {measured[0][2].tokenizer.id}")
    return measured[0][2]


def too_short(split: SplitText, tokenizer: Tokenizer, block_size: int) -> str | None:
    """Why a BPE cannot train this text with this context (a side of the split of one window or less)."""
    for side, text in (("validation", split.val), ("training", split.train)):
        tokens = tokenizer.encode(text).numel()
        if tokens <= block_size + 1:
            return (f"the {side} text is {tokens:,} tokens of a BPE, too few for a context of {block_size}; "
                    f"it is {len(text):,} bytes")
    return None


def bytes_suit_better(train: bytes) -> str | None:
    """Why `auto` starts a new lineage on bytes rather than BPE, or None. BPE measured better on real text from
    the ~10 KB of a few pages (one session 2.57 bits per byte against bytes' 3.26) to hundreds of KB
    (bench/results/tokenizer.md), and a byte lineage's sessions carry over to a BPE poorly, so the line is
    drawn low; below it a BPE has too little text to learn merges from, and a BPE reads UTF-8 only."""
    if len(train) < AUTO_BPE_MIN_BYTES:
        return f"the training text is {len(train):,} bytes; BPE is chosen from {AUTO_BPE_MIN_BYTES:,}"
    try:
        train.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"the training text is not UTF-8 (byte {exc.start:,}), which a BPE would replace"
    return None


def base_model_of(entry: reg.CheckpointEntry) -> str | None:
    """The pretrained model an entry's lineage started from (`init_from`), recorded in its fingerprint."""
    extra = entry.fingerprint.model_extra if entry.fingerprint is not None else None
    value = (extra or {}).get("base_model")
    return value if isinstance(value, str) else None


def started_from(registry: reg.Registry, init_from: str) -> list[reg.CheckpointEntry]:
    """The restorable entries of the lineages started from the pretrained model `init_from`."""
    return [e for e in registry.values() if e.restorable and base_model_of(e) == init_from]


def choose_base(
    store: CheckpointStore, registry: reg.Registry, profile: Profile, sources: PretrainedSources, *,
    fresh: bool, within: str, notes: list[str], unusable: set[str],
) -> TokenizerChoice:
    """For a profile with `init_from`: the lineage started from that model, continued from its best checkpoint
    (tokenizer and network from the payload, so the source is not read again), or a new one from the source."""
    assert profile.init_from is not None
    candidates = [] if fresh else sorted(started_from(registry, profile.init_from), key=lambda e: e.latest_loss)
    for entry in candidates:
        found = _read_lineage(entry, store, within, notes, unusable)
        if found is not None:
            assert found.model_config is not None
            check_network(profile, found.model_config, sources.limits)  # the limits may have been lowered since
            return found
    base = read_pretrained(sources.resolve(profile.init_from), max_bytes=sources.max_bytes,
                           check=lambda network: check_network(profile, network, sources.limits))
    params = sum(t.numel() for name, t in base.weights.items() if name != "lm_head.weight")
    cfg = base.model_config
    notes.append(f"started a new lineage from the pretrained model `{profile.init_from}` ({params:,} parameters, "
                 f"{cfg.n_layer} layers, {cfg.n_embd} wide, context {cfg.block_size}, {base.tokenizer.id})")
    return TokenizerChoice(base.tokenizer, {}, base.model_config, base.weights)


def read_checkpoint(store: CheckpointStore, entry: reg.CheckpointEntry, within: str
                    ) -> tuple[dict[str, Any], Tokenizer, ModelConfig]:
    """An entry's payload with the tokenizer and network it carries, checked against each other and against
    the entry. StoreError or ValueError when it does not read or does not agree."""
    assert entry.storage is not None
    payload = load_state(store.get(entry.storage, within=within))
    try:
        model_config = ModelConfig.from_dict(payload["model_config"])
    except TypeError as exc:
        raise ValueError(f"its model config is not valid ({exc})") from exc
    check_model_config(payload, model_config)
    tokenizer = from_checkpoint(str(payload.get("tokenizer", BYTES_ID)), payload.get("tokenizer_json"))
    if entry.fingerprint is not None and tokenizer.id != entry.fingerprint.tokenizer:
        raise ValueError(f"its weights carry tokenizer {tokenizer.id}, the registry says {entry.fingerprint.tokenizer}")
    if tokenizer.vocab_size != model_config.vocab_size:
        raise ValueError(f"its tokenizer has {tokenizer.vocab_size} tokens, its model {model_config.vocab_size}")
    return payload, tokenizer, model_config


def _read_lineage(entry: reg.CheckpointEntry, store: CheckpointStore, within: str, notes: list[str],
                  unusable: set[str]) -> TokenizerChoice | None:
    """The tokenizer and network the entry's payload carries; None (with a note) when it does not read or
    disagrees with its entry."""
    try:
        payload, tokenizer, model_config = read_checkpoint(store, entry, within)
    except (StoreError, ValueError) as exc:
        unusable.add(entry.checkpoint_id)
        notes.append(f"skipped {entry.checkpoint_id}: {exc}")
        return None
    return TokenizerChoice(tokenizer, {entry.checkpoint_id: payload}, model_config)


def check_network(profile: Profile, network: ModelConfig, limits: Limits | None) -> None:
    """A pretrained network keeps to the operator's limits as a profile's does: its parameters, its context
    and batch_size × context are what the profile's own checks (app/config/limits.py) would have been."""
    if limits is None:
        return
    effective = profile.model_copy(update={
        "n_layer": network.n_layer, "n_head": network.n_head, "n_embd": network.n_embd,
        "block_size": network.block_size, "vocab_size": network.vocab_size, "tokenizer": "bpe",
    })
    problems = profile_problems(f"init_from `{profile.init_from}`", effective, limits)
    if problems:
        raise SessionError("; ".join(problems))
