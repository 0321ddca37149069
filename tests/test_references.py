"""Which dropped weights other branches' registries still name (pure): what they name is kept, malformed
entries included, and a file that is not a registry keeps everything."""

from __future__ import annotations

import json

import pytest

from workers.session import registry as reg
from workers.session.references import referenced_objects, unshared

RUN = "octo/demo/nanecho-cached-ci"


def stored(cid: str, **storage: object) -> dict:
    return {"checkpoint_id": cid, "val_loss": 1.0,
            "storage": {"key": f"{RUN}/{cid}.pt", "sha256": "a" * 64, "bytes": 10, **storage}}


def registry_file(*entries: dict) -> bytes:
    return json.dumps({e["checkpoint_id"]: e for e in entries}).encode()


def dropped(*entries: dict) -> list[reg.CheckpointEntry]:
    parsed, problems = reg.parse_registry(registry_file(*entries))
    assert problems == []
    return list(parsed.values())


def test_a_registry_names_the_keys_and_uris_of_its_entries_malformed_ones_included() -> None:
    raw = registry_file(
        stored("c1"),
        {"checkpoint_id": "c2", "val_loss": "not a number", "storage": {"key": f"{RUN}/c2.pt"}},  # fails validation
        {"checkpoint_id": "legacy", "storage": {"uri": "file:///store/octo/demo/run/legacy.pt"}},
        {"checkpoint_id": "seed", "val_loss": 2.0},  # the seed's kind: no weights
        {"checkpoint_id": "odd", "storage": {"key": 7}},
    )
    assert referenced_objects(raw) == {f"{RUN}/c1.pt", f"{RUN}/c2.pt", "file:///store/octo/demo/run/legacy.pt"}
    assert referenced_objects(b"{}") == frozenset()


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b"\xff{"])
def test_a_file_that_is_not_a_registry_names_nothing_knowable(raw: bytes) -> None:
    assert referenced_objects(raw) is None


def test_dropped_weights_another_branch_names_are_kept_and_the_rest_freed() -> None:
    gone = dropped(stored("c1"), stored("c2"), stored("c3"), {"checkpoint_id": "seed", "val_loss": 3.0})
    sharing = unshared(gone, {"exp": registry_file(stored("c1"), stored("c9")), "docs": registry_file(stored("c2")),
                              "empty": b"{}"})
    assert [e.checkpoint_id for e in sharing.kept] == ["c1", "c2"]
    assert [e.checkpoint_id for e in sharing.free] == ["c3"]  # the seed entry has nothing to delete
    assert sharing.holders == ("docs", "exp")


def test_a_legacy_uri_is_matched_by_uri() -> None:
    uri = "file:///store/octo/demo/nanecho-cached-ci/old.pt"
    gone = dropped({"checkpoint_id": "old", "val_loss": 1.0, "storage": {"uri": uri, "sha256": "a" * 64, "bytes": 1}})
    assert [e.checkpoint_id for e in unshared(gone, {"exp": registry_file({"checkpoint_id": "x",
                                                                            "storage": {"uri": uri}})}).kept] == ["old"]


def test_with_no_other_branch_everything_dropped_is_freed() -> None:
    sharing = unshared(dropped(stored("c1"), stored("c2")), {})
    assert ([e.checkpoint_id for e in sharing.free], sharing.kept, sharing.holders) == (["c1", "c2"], (), ())


def test_a_branch_whose_file_is_not_a_registry_keeps_everything() -> None:
    sharing = unshared(dropped(stored("c1"), stored("c2")), {"exp": registry_file(), "broken": b"{oops"})
    assert sharing.free == () and [e.checkpoint_id for e in sharing.kept] == ["c1", "c2"]
    assert sharing.holders == ("broken",)
