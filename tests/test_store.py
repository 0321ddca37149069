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


RUN = "octo/demo/run"


def test_put_records_key_sha_and_size_and_get_verifies(store: CheckpointStore) -> None:
    obj = store.put(f"{RUN}/ckpt_1.pt", b"weights")
    assert obj.key == f"{RUN}/ckpt_1.pt" and obj.uri is None
    assert obj.model_dump() == {"key": f"{RUN}/ckpt_1.pt", "sha256": hashlib.sha256(b"weights").hexdigest(),
                                "bytes": 7}  # nothing about where the store is
    assert store.get(obj, within=RUN) == b"weights"


def test_no_temporary_object_is_left_behind(store: CheckpointStore) -> None:
    store.put("o/r/run/a.pt", b"x" * 1000)
    names = [p.rsplit("/", 1)[1] for p in store.fs.ls(f"{store.root}/o/r/run", detail=False)]
    assert names == ["a.pt"]


def test_a_changed_object_is_refused(store: CheckpointStore) -> None:
    obj = store.put("o/r/run/a.pt", b"weights")
    with store.fs.open(f"{store.root}/o/r/run/a.pt", "wb") as fh:
        fh.write(b"w3ights")
    with pytest.raises(StoreError, match="is corrupt"):
        store.get(obj, within="o/r/run")


def test_a_missing_object_is_a_store_error_and_delete_is_idempotent(store: CheckpointStore) -> None:
    obj = store.put("o/r/run/a.pt", b"weights")
    store.delete(obj, within="o/r/run")
    store.delete(obj, within="o/r/run")
    with pytest.raises(StoreError, match="could not be read"):
        store.get(obj, within="o/r/run")
    with pytest.raises(StoreError, match="could not be read"):
        store.get(StoredObject(key="o/r/run/nothing.pt", sha256="0" * 64, bytes=0), within="o/r/run")


@pytest.mark.parametrize("key", [
    "octo/demo/other-run/ckpt.pt",  # another run of the same repository
    "octo/victim/run/ckpt.pt",  # another repository
    "octo/demo/run/../../victim/run/ckpt.pt",
    "octo/demo/run/./ckpt.pt", "octo/demo/run//ckpt.pt", "octo/demo/run/",
    "/octo/demo/run/ckpt.pt", "file:///octo/demo/run/ckpt.pt", "octo/demo/run/x://y", "octo/demo/run/a\\..\\b",
    "octo/demo/run/ckpt\x00.pt",
    "octo/demo/run/*", "octo/demo/run/ckpt?.pt", "octo/demo/run/[c]kpt.pt", "octo/demo/run/{a,b}.pt",  # globs
])
def test_an_object_outside_the_runs_folder_is_never_read_sized_or_deleted(store: CheckpointStore, key: str) -> None:
    victim = store.put("octo/victim/run/ckpt.pt", b"theirs")
    hostile = StoredObject(key=key, sha256=victim.sha256, bytes=victim.bytes)
    with pytest.raises(StoreError, match="outside this run's folder") as refused:
        store.get(hostile, within=RUN)
    assert store.root not in str(refused.value) and "file:" not in str(refused.value)
    assert store.size(hostile, within=RUN) is None
    store.delete(hostile, within=RUN)
    assert store.get(victim, within="octo/victim/run") == b"theirs"


def test_an_older_entrys_uri_is_read_only_inside_the_runs_folder_of_this_store(
        store: CheckpointStore, tmp_path: Path) -> None:
    ours = store.put(f"{RUN}/old.pt", b"weights")
    legacy = StoredObject(uri=f"{store.url}/{RUN}/old.pt", sha256=ours.sha256, bytes=ours.bytes)
    assert store.get(legacy, within=RUN) == b"weights"
    outside = tmp_path / "worker-file"
    outside.write_bytes(b"keep me")
    digest = hashlib.sha256(b"keep me").hexdigest()
    for uri in (f"file://{outside}", "http://169.254.169.254/latest/meta-data", f"{store.url}/{RUN}/../../x/run/a.pt",
                f"{store.url}/octo/victim/run/ckpt.pt", f"{store.url}{RUN}/old.pt"):
        hostile = StoredObject(uri=uri, sha256=digest, bytes=7)
        with pytest.raises(StoreError, match="outside this run's folder"):
            store.get(hostile, within=RUN)
        store.delete(hostile, within=RUN)
    assert outside.read_bytes() == b"keep me"


def test_an_entry_naming_no_object_is_refused(store: CheckpointStore) -> None:
    with pytest.raises(StoreError, match="outside this run's folder"):
        store.get(StoredObject(sha256="0" * 64, bytes=0), within=RUN)


def test_a_key_naming_a_folder_inside_the_run_is_never_deleted(tmp_path) -> None:
    """Retention deletes what a registry entry names; an entry can name a folder (the run's inflight/):
    deleting it must fail quietly, on an object store where folders are prefixes too."""
    for store in (CheckpointStore(f"file://{tmp_path / 'store'}"), CheckpointStore("memory://retrain-test")):
        kept = store.put(f"{RUN}/inflight/other.pt", b"another session's")
        store.delete(StoredObject(key=f"{RUN}/inflight", sha256=kept.sha256, bytes=kept.bytes), within=RUN)
        assert store.get(kept, within=RUN) == b"another session's"
