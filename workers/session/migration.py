"""Moving a lineage to a better tokenizer as its repository grows, without losing what it learnt.

`tokenizer: auto` starts a repository of a page or two on bytes (too little text for a BPE's merges), and a
lineage goes on with its tokenizer. Repositories grow: past the size where a new lineage would take a BPE (or
twice the text its BPE was learnt on), a session looks at a move. It learns a BPE from today's training split
and, when that reads today's validation text enough more compactly, carries the training state over
(weights, their average, the optimizer's moments and count: workers/trainer/vocab_transfer.py) and runs a
trial inside its own budget: `TRIAL_SHARE` of its iterations healing the moved lineage and, unless that is
decisive, as many continuing the old one, both measured on today's validation set in bits per byte (which
compare across tokenizers). The better one trains on for the rest of the session; the other's trial is
dropped. A declined move is tried again once the text has doubled (`RETRY_GROWTH`), so a repository where
its tokenizer suits it pays for a look (and at most one trial) once per doubling.

The facts a lineage keeps about this travel in its checkpoints' fingerprints (extra keys): `FROM` (where a
moved lineage came from and how), `TEXT_BYTES` (the text its BPE was learnt on) and `DECLINED` (the text
size at which a move was last declined). `migration_due` is pure and says when to look; `consider` learns
today's BPE and tries the move only when it reads today's validation text `MIN_READING_GAIN` more compactly
than the lineage's own tokenizer (measured, not assumed from the size); `propose` carries the state over.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from app.config.repo_config import Profile
from workers.session import registry as reg
from workers.session.tokenizer_choice import bytes_suit_better
from workers.trainer.data import Corpus, SplitText, encode_split
from workers.trainer.model import ModelConfig
from workers.trainer.tokenizer import BPE_KIND, BYTES_ID, Tokenizer, train_bpe
from workers.trainer.vocab_transfer import transfer_payload

log = logging.getLogger(__name__)

TRIAL_SHARE = 0.1  # of the session's iterations, for each side of the trial
MIN_TRIAL_ITERS = 3  # below this a trial measures nothing; a shorter session does not try
BPE_REGROWTH = 2  # a BPE learnt on half of today's training text or less is due for a new one
RETRY_GROWTH = 2  # after a declined move, the training text must double before the next trial
# a move is tried only when today's BPE carries this much more text per token on today's validation text
# (reading_gain): below it the carried network's healing costs more than the better tokens give back
# (bench/continual 2026-12-07: moves at +10 % won their trials, at +1.3 % and +2.7 % lost them)
MIN_READING_GAIN = 0.05
METHOD = reg.MIGRATION_METHOD

FROM = reg.MIGRATED_FROM
TEXT_BYTES = "tokenizer_text_bytes"
DECLINED = "migration_declined_bytes"


def _extra(fingerprint: reg.Fingerprint | None, key: str) -> Any:
    return (fingerprint.model_extra or {}).get(key) if fingerprint is not None else None


def _size(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**48 else None


def migration_due(profile: Profile, resume: reg.CheckpointEntry | None, train: bytes, *, fresh: bool) -> str | None:
    """Why this session should try moving its lineage to a new BPE, or None. Only `auto` moves: a pinned
    tokenizer stays pinned, and a pretrained model's tokenizer is its own."""
    if profile.tokenizer != "auto" or profile.init_from or fresh or resume is None or resume.fingerprint is None:
        return None
    fp, train_bytes = resume.fingerprint, len(train)
    declined = _size(_extra(fp, DECLINED))
    if declined is not None and train_bytes < RETRY_GROWTH * declined:
        return None
    if bytes_suit_better(train) is not None:  # a byte lineage considers a BPE where a new lineage would take one
        return None
    if fp.tokenizer == BYTES_ID:
        return f"the training text is {train_bytes:,} bytes, enough for a new lineage to take a BPE"
    learnt_on = _size(_extra(fp, TEXT_BYTES))
    if fp.tokenizer.startswith(f"{BPE_KIND}:") and learnt_on is not None and train_bytes >= BPE_REGROWTH * learnt_on:
        return (f"the training text is {train_bytes:,} bytes, {train_bytes / learnt_on:.1f}x the {learnt_on:,} "
                "its BPE was learnt on")
    return None


def trial_iters(session_iters: int) -> int | None:
    """Iterations each side of the trial runs, or None when the session is too short to try."""
    each = round(TRIAL_SHARE * session_iters)
    return each if each >= MIN_TRIAL_ITERS and session_iters - 2 * each >= 1 else None


def carried(resume: reg.CheckpointEntry | None) -> dict[str, Any]:
    """The lineage facts a continuing checkpoint inherits from the one it continues, of the right shape."""
    fp = resume.fingerprint if resume is not None else None
    out: dict[str, Any] = {k: v for k in (TEXT_BYTES, DECLINED) if (v := _size(_extra(fp, k))) is not None}
    if (origin := reg.migration_origin(fp)) is not None:
        out[FROM] = origin
    return out


@dataclass(frozen=True)
class Migration:
    """A proposed move: the new lineage's tokenizer, network, text and the training state it goes on from."""

    reason: str
    source: str  # the checkpoint it moves from
    old_tokenizer: str
    tokenizer: Tokenizer
    model_config: ModelConfig
    corpus: Corpus
    state: dict[str, Any]  # a payload in the new tokens: weights, average and optimizer moments carried
    trial_iters: int
    train_bytes: int
    old_val_loss: float | None = None  # the resumed checkpoint on today's validation set, when measured
    old_gain: float | None = None  # the share of its val loss its own session took off per iteration

    @property
    def origin(self) -> dict[str, Any]:
        return {"checkpoint_id": self.source, "tokenizer": self.old_tokenizer, "method": METHOD}


def propose(
    reason: str, resume_entry: reg.CheckpointEntry, resume_state: dict[str, Any], old: Tokenizer,
    old_config: ModelConfig, split: SplitText, tokenizer: Tokenizer, trial: int, old_val_loss: float | None = None,
) -> Migration:
    """Carry the resumed training state over to `tokenizer` (today's BPE). ValueError when the text is too
    short for the network's context in the new tokens."""
    model_config = ModelConfig(**{**old_config.to_dict(), "vocab_size": tokenizer.vocab_size})
    corpus = encode_split(split, tokenizer, block_size=model_config.block_size)
    state = transfer_payload(resume_state, old, tokenizer, model_config)
    log.info("proposing a move from %s to %s", old.id, tokenizer.id)
    return Migration(reason, resume_entry.checkpoint_id, old.id, tokenizer, model_config, corpus, state, trial,
                     len(split.train), old_val_loss, last_gain(resume_entry))


def reading_gain(old: Tokenizer, new: Tokenizer, text: bytes) -> float:
    """How much more of `text` each of `new`'s tokens carries than each of `old`'s, as a share (0.1: 10 % more
    bytes a token): the same context and steps then see that much more text."""
    old_tokens, new_tokens = old.encode(text).numel(), new.encode(text).numel()
    return old_tokens / new_tokens - 1.0 if new_tokens else 0.0


def last_gain(entry: reg.CheckpointEntry) -> float | None:
    """The share of its val loss the session that wrote `entry` took off per iteration, from the registry's
    `metrics.val_loss_before`, `val_loss` and `session.start_iteration`; None when they are not there or not
    sensible (the registry is the repository's: a hostile figure can only make a trial run both sides)."""
    extra = entry.model_extra or {}
    metrics, session = extra.get("metrics"), extra.get("session")
    before = metrics.get("val_loss_before") if isinstance(metrics, dict) else None
    start = session.get("start_iteration") if isinstance(session, dict) else None
    ran = entry.iteration - start if isinstance(start, int) and not isinstance(start, bool) else 0
    after = entry.val_loss
    if not isinstance(before, int | float) or isinstance(before, bool) or after is None or ran <= 0:
        return None
    try:
        before = float(before)  # a JSON integer of 400 digits does not fit a float
    except OverflowError:
        return None
    if not (math.isfinite(before) and math.isfinite(after)) or before <= 0 or after < 0:
        return None
    return min(max((before - after) / before, 0.0), 1.0) / ran


def consider(
    profile: Profile, resume_entry: reg.CheckpointEntry, resume_state: dict[str, Any], old: Tokenizer,
    old_config: ModelConfig, split: SplitText, session_iters: int, *, fresh: bool, notes: list[str],
    old_val_loss: float | None = None,
) -> Migration | int | None:
    """The move this session should try; None when none is due (or the session is too short to try, with a
    note); the training text's size when one is due but the text cannot be encoded for it (with a note): the
    session records it as declined, so it is not proposed again until the text has doubled."""
    reason = migration_due(profile, resume_entry, split.train, fresh=fresh)
    if reason is None:
        return None
    trial = trial_iters(session_iters)
    if trial is None:
        notes.append(f"tokenizer auto: a move to a new BPE is due ({reason}), but a session of {session_iters} "
                     "iterations is too short to try it")
        return None
    tokenizer = train_bpe(split.train, profile.vocab_size)
    gain = reading_gain(old, tokenizer, split.val)
    if gain < MIN_READING_GAIN:
        notes.append(f"tokenizer auto: a move to a new BPE was due ({reason}), but a BPE learnt from today's text "
                     f"reads its validation text only {gain:.1%} more compactly than {old.id} (a move is tried from "
                     f"{MIN_READING_GAIN:.0%}); the next look waits until the text has doubled")
        return len(split.train)
    try:
        return propose(f"{reason}; today's BPE reads the validation text {gain:.0%} more compactly", resume_entry,
                       resume_state, old, old_config, split, tokenizer, trial, old_val_loss)
    except ValueError as exc:
        notes.append(f"tokenizer auto: a move to a new BPE is due ({reason}), but it cannot be tried: {exc}; the "
                     "next try waits until the text has doubled")
        return len(split.train)


def fingerprint_of(migration: Migration, data_sha256: str) -> reg.Fingerprint:
    """The moved lineage's first fingerprint: its own tokenizer and shape, where it came from."""
    cfg = migration.model_config
    return reg.Fingerprint(
        data_sha256=data_sha256, tokenizer=migration.tokenizer.id,
        model_config_sha256=reg.model_config_sha256(cfg.to_dict()), shape_sha256=reg.shape_sha256(cfg.to_dict()),
        val_sha256=migration.corpus.val_fingerprint(cfg.block_size),
        **{FROM: migration.origin, TEXT_BYTES: migration.train_bytes},
    )


def declined(fingerprint: reg.Fingerprint, train_bytes: int) -> reg.Fingerprint:
    """The continuing lineage's fingerprint, remembering that a move was tried at this size and lost."""
    return reg.Fingerprint.model_validate({**fingerprint.model_dump(), DECLINED: train_bytes})
