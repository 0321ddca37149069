"""Which stored weights the registries of other branches still name. Pure: no I/O.

The store is keyed by repository and run (`<owner>/<repo>/<run>/<checkpoint>.pt`), not by branch, and
must stay so: a branch forked from another carries its parent's `metadata.json`, which names the parent's
keys, so keying by branch would not separate them, it would only hide the sharing. So when retention on
one branch drops an entry, its weights may still be what another branch resumes from; they are deleted
only when no other branch's registry names them.

A registry is read here more loosely than `registry.parse_registry` reads it: an entry that fails
validation (a hand edit, a newer field) still names its object, and what is named is kept. A file that is
not a registry at all (not JSON, not an object) tells nothing about what it needs, so then nothing is
deleted: space is cheaper than a lost checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from workers.session.registry import CheckpointEntry, StoredObject


def referenced_objects(raw: bytes | str) -> frozenset[str] | None:
    """Every object name (`storage.key`, and `storage.uri` of entries written before keys) in a registry
    file, malformed entries included; None when the file is not a registry at all."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    names: set[str] = set()
    for entry in data.values():
        storage = entry.get("storage") if isinstance(entry, dict) else None
        if isinstance(storage, dict):
            names.update(v for k in ("key", "uri") if isinstance(v := storage.get(k), str))
    return frozenset(names)


def object_names(obj: StoredObject) -> frozenset[str]:
    """The names an entry's stored object goes by: its key, or (written before keys) its uri."""
    return frozenset(name for name in (obj.key, obj.uri) if name is not None)


@dataclass(frozen=True)
class Sharing:
    """What retention dropped, split by whether another branch may still need the weights."""

    free: tuple[CheckpointEntry, ...]  # no other registry names them: delete
    kept: tuple[CheckpointEntry, ...]  # another registry names them (or one could not be read as a registry)
    holders: tuple[str, ...]  # the branches that keep them, for the log


def unshared(dropped: Iterable[CheckpointEntry], registries: Mapping[str, bytes]) -> Sharing:
    """Split the stored entries of `dropped` by what the `registries` (branch -> file) name.

    Entries without stored weights have nothing to delete and appear in neither list. When a branch's
    file is not a registry (see referenced_objects), every stored entry is kept.
    """
    stored = [(e, e.storage) for e in dropped if e.storage is not None]
    named = {branch: referenced_objects(raw) for branch, raw in registries.items()}
    unknown = sorted(branch for branch, names in named.items() if names is None)
    if unknown:
        return Sharing(free=(), kept=tuple(e for e, _ in stored), holders=tuple(unknown))
    free: list[CheckpointEntry] = []
    kept: list[CheckpointEntry] = []
    holders: set[str] = set()
    for entry, obj in stored:
        names = object_names(obj)
        held = {branch for branch, found in named.items() if found is not None and names & found}
        (kept if held else free).append(entry)
        holders |= held
    return Sharing(free=tuple(free), kept=tuple(kept), holders=tuple(sorted(holders)))
