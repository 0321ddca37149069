"""Checkpoints whose session trained and stored weights but whose commit never landed.

A session writes its registry entry as a record beside its weights before committing; the next session
finds records whose checkpoint is missing from the registry and commits them with its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from workers.session import registry as reg
from workers.session.store import CheckpointStore


@dataclass(frozen=True)
class Pending:
    """Checkpoints stored by sessions whose commit never landed, found through their entry records."""

    entries: tuple[reg.CheckpointEntry, ...] = ()
    record_keys: tuple[str, ...] = ()  # every record seen: removed once a commit holds their entries


ENTRY_RECORD = ".entry.json"


def find_pending(store: CheckpointStore, run_prefix: str, registry: reg.Registry, notes: list[str]) -> Pending:
    """Entry records in the store whose checkpoint is missing from the registry and whose weights are there.

    A session writes its entry record beside its weights before committing, so a session that trained
    but could not commit (GitHub down, the worker lost) still gets its checkpoint into the next commit.
    """
    entries, keys = [], []
    for key in store.keys(run_prefix, ENTRY_RECORD):
        keys.append(key)
        try:
            entry = reg.CheckpointEntry.model_validate_json(store.read(key) or b"")
        except ValidationError:
            notes.append(f"ignored an unreadable checkpoint record {key}")
            continue
        if entry.checkpoint_id in registry:
            continue
        if entry.storage is None or store.size(entry.storage, within=run_prefix) != entry.storage.bytes:
            notes.append(f"could not recover {entry.checkpoint_id}: its weights are missing")
            continue
        entries.append(entry)
        notes.append(f"recovered {entry.checkpoint_id}, trained by a session whose commit did not land")
    return Pending(tuple(entries), tuple(keys))


PULLS_FOLDER = "pulls"  # a pull request's evaluation keeps its weights in <run>/pulls/<number>/ (session.py)
MAX_PULLS_CHECKED = 20  # the newest pull requests with kept weights asked about per session: GitHub calls


def pull_numbers(store: CheckpointStore, run_prefix: str) -> list[int]:
    """The pull requests whose evaluations left an entry record in the run's folder, newest (highest) last."""
    found = []
    for folder in store.keys(f"{run_prefix}/{PULLS_FOLDER}", ""):
        name = folder.rstrip("/").rsplit("/", 1)[-1]
        if name.isdigit() and len(name) < 10 and store.keys(folder, ENTRY_RECORD):
            found.append(int(name))
    return sorted(found)[-MAX_PULLS_CHECKED:]


def find_merged_pulls(
    store: CheckpointStore, run_prefix: str, registry: reg.Registry, notes: list[str], merged: dict[int, str]
) -> Pending:
    """The checkpoints merged pull requests' evaluations trained on the very head that was merged: candidates
    for this branch like any other (the best on today's validation set decides). One trained on an earlier
    head holds text that may never have been merged (pushed, evaluated, then taken out): it is left out.
    The records go once a commit holds what was taken (the others are of no use any more)."""
    entries, keys = [], []
    for number, merged_head in sorted(merged.items()):
        folder = f"{run_prefix}/{PULLS_FOLDER}/{number}"
        found = find_pending(store, folder, registry, [])
        for entry in found.entries:
            trained_on = ((entry.model_extra or {}).get("session") or {}).get("data_commit")
            if trained_on != merged_head:
                notes.append(f"left out {entry.checkpoint_id} of merged pull request #{number}: it trained on "
                             f"{str(trained_on)[:12]}, not on the head that was merged ({merged_head[:12]})")
                continue
            entries.append(entry)
            notes.append(f"took {entry.checkpoint_id}, trained on merged pull request #{number}, as a candidate")
        keys.extend(found.record_keys)
    return Pending(tuple(entries), tuple(keys))
