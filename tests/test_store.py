"""The checkpoint store over fsspec: a local directory and memory://, atomic writes, verified reads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from workers.session.registry import StoredObject
from workers.session.store import CheckpointStore, StoreError


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> CheckpointStore:
    if request.param == "file":
        return CheckpointStore(f"file://{tmp_path}/store")
    return CheckpointStore(f"memory://retrain-test-{tmp_path.name}")


def test_put_records_uri_sha_and_size_and_get_verifies(store: CheckpointStore) -> None:
    obj = store.put("octo/demo/run/ckpt_1.pt", b"weights")
    assert obj.uri == f"{store.url}/octo/demo/run/ckpt_1.pt"
    assert obj.sha256 == hashlib.sha256(b"weights").hexdigest() and obj.bytes == 7
    assert store.get(obj) == b"weights"


def test_no_temporary_object_is_left_behind(store: CheckpointStore) -> None:
    store.put("o/r/run/a.pt", b"x" * 1000)
    names = [p.rsplit("/", 1)[1] for p in store.fs.ls(f"{store.root}/o/r/run", detail=False)]
    assert names == ["a.pt"]


def test_a_changed_object_is_refused(store: CheckpointStore) -> None:
    obj = store.put("o/r/run/a.pt", b"weights")
    with store.fs.open(f"{store.root}/o/r/run/a.pt", "wb") as fh:
        fh.write(b"w3ights")
    with pytest.raises(StoreError, match="is corrupt"):
        store.get(obj)


def test_a_missing_object_is_a_store_error_and_delete_is_idempotent(store: CheckpointStore) -> None:
    obj = store.put("o/r/run/a.pt", b"weights")
    store.delete(obj)
    store.delete(obj)
    with pytest.raises(StoreError, match="could not be read"):
        store.get(obj)
    with pytest.raises(StoreError, match="could not be read"):
        store.get(StoredObject(uri=f"{store.url}/nothing.pt", sha256="0" * 64, bytes=0))
