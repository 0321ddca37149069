"""The trial that decides whether a lineage moves to a new tokenizer (workers/session/migration.py): both
sides train the same few iterations inside the session, and today's validation set says which goes on."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from workers.session.migration import declined
from workers.session.plan import SessionPlan
from workers.trainer.data import bits_per_byte
from workers.trainer.train import Snapshot, TrainConfig, TrainResult

log = logging.getLogger(__name__)

Run = Callable[[SessionPlan, TrainConfig, dict[str, Any] | None, dict[str, Any] | None,
                Callable[[Snapshot], None] | None], TrainResult]


DECISIVE = 0.10  # the moved side wins outright when this much (or more: see `decisive`) below the old lineage
RATE_SAFETY = 3  # how much faster than its last session's average the old lineage is assumed to go on learning


@dataclass(frozen=True)
class Trial:
    result: TrainResult | None  # the kept side's trial, which the session goes on from; None: nothing to keep
    parent: str  # the checkpoint the session started from (the old lineage's, either way)
    val_before: float | None  # that checkpoint's val loss on today's set: the session's "before"
    dropped_iters: int  # the losing side's iterations, which count against the session
    cut_short: bool = False  # stopped (time, cancel, shutdown) during the trial: `result` is the session


def decisive(moved_after: float, old_before: float | None, old_rate: float | None, iters: int) -> bool:
    """Whether the moved side, after its trial, is so far below where the old lineage stands that continuing
    for the trial's `iters` cannot catch up: lower by DECISIVE, and by RATE_SAFETY times what the old
    lineage's last session took off per iteration (its average rate; a learning curve flattens, so the next
    iterations gain less). Then the old side's trial, whose iterations would be thrown away, is not run."""
    if old_before is None or not math.isfinite(moved_after):
        return False
    return moved_after < old_before * (1.0 - max(DECISIVE, RATE_SAFETY * iters * (old_rate or 0.0)))


def try_migration(plan: SessionPlan, run: Run) -> tuple[SessionPlan, Trial]:
    """Train the moved lineage `trial_iters` (without a cooldown, so it is not flattered); unless that is
    decisive, train the old one as many and keep the lower on today's validation set. Returns the plan to go
    on with (the moved one, or the old one remembering that the move lost) and the kept side's trial."""
    move, resume = plan.migration, plan.resume
    assert move is not None and resume is not None
    trial_config = replace(plan.train_config, max_iters=move.trial_iters, cooldown_iters=0)
    stay, moved = replace(plan, migration=None), plan.migrated()
    parent, before = resume.entry.checkpoint_id, move.old_val_loss
    # the moved lineage goes on from the old one's state (its optimizer moments and count carried), so it does
    # not warm up again, and no fresh optimizer steps its carried weights at the full rate (that knocked the
    # guard test's small network back 7 %); bench/continual put carrying, warming up again and a fresh
    # optimizer without warmup within 0.6 % of each other (bench/README.md)
    new = run(moved, trial_config, move.state, None, None)
    moved_bpb = f"{bits_per_byte(new.val_loss_after):.4f}"
    if new.val_loss_before is not None:  # what the carried network reads before any healing: the move's own cost
        moved_bpb += f" (carried over: {bits_per_byte(new.val_loss_before):.4f})"
    from_bpb = f"{bits_per_byte(before):.4f}" if before is not None else "not measured"
    kept = (f"tokenizer auto: moved this lineage from {move.old_tokenizer} to {move.tokenizer.id} ({move.reason}), "
            f"by {move.origin['method']} from {parent}")
    if new.stopped_early:
        if before is not None and math.isfinite(new.val_loss_after) and new.val_loss_after < before:
            moved.notes.append(f"{kept}: the session stopped during the trial, when the moved lineage already "
                               f"measured {moved_bpb} bits per byte against {from_bpb}")
            return moved, Trial(new, parent, before, 0, cut_short=True)
        return stay, Trial(None, parent, before, 0, cut_short=True)
    if decisive(new.val_loss_after, before, move.old_gain, move.trial_iters):
        moved.notes.append(f"{kept}: after {move.trial_iters} iterations the moved lineage measured {moved_bpb} "
                           f"bits per byte against the lineage's {from_bpb} before, lower than continuing could reach "
                           f"in as many iterations, so the old side's trial was not run")
        log.info("moved lineage from %s to %s", move.old_tokenizer, move.tokenizer.id)
        return moved, Trial(new, parent, before, 0)
    old = run(stay, trial_config, resume.state, None, None)
    before = old.val_loss_before if old.val_loss_before is not None else before
    figures = (f"after {move.trial_iters} iterations each, going on with {move.old_tokenizer} reached "
               f"{bits_per_byte(old.val_loss_after):.4f} bits per byte, moving to {move.tokenizer.id} {moved_bpb} "
               f"(from {bits_per_byte(before) if before is not None else float('nan'):.4f})")
    better = math.isfinite(new.val_loss_after) and new.val_loss_after < old.val_loss_after
    if old.stopped_early:  # the moved side finished: the lower of the two goes on, as far as it got
        side, winner = (moved, new) if better else (stay, old)
        side.notes.append(f"tokenizer auto: the session stopped during the trial of a move to {move.tokenizer.id}; "
                          f"{figures}; went on with {move.tokenizer.id if winner is new else move.old_tokenizer}")
        return side, Trial(replace(winner, stopped_early=True), parent, before, move.trial_iters, cut_short=True)
    if better:
        moved.notes.append(f"{kept}: {figures}")
        log.info("moved lineage from %s to %s", move.old_tokenizer, move.tokenizer.id)
        return moved, Trial(new, parent, before, move.trial_iters)
    stay.notes.append(f"tokenizer auto: tried moving this lineage to a new BPE ({move.reason}) and kept "
                      f"{move.old_tokenizer}: {figures}; the next try waits until the text has doubled")
    return replace(stay, fingerprint=declined(plan.fingerprint, move.train_bytes)), Trial(
        old, parent, before, move.trial_iters)
