"""The checkpoint store on a real S3 API (moto's server mode, a process of the module's own), configured as
a worker is (deploy/): the endpoint through fsspec's own environment variable, the credentials as AWS
names them. Whole objects or none, listings that see what another process stored a moment ago, deletes
that stay inside the run's folder, credentials in no message, and two local sessions in two processes
sharing one bucket."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from tests.processes import ROOT, s3_server
from tests.repos import git, make_local_repo
from workers.session.registry import StoredObject
from workers.session.store import CheckpointStore, StoreError

SECRET = "retrain-test-secret-9f3c2e"  # looked for in every message and file the tests produce
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "retrain-test-key-id", "AWS_SECRET_ACCESS_KEY": SECRET,
               "AWS_DEFAULT_REGION": "us-east-1"}
RUN = "octo/demo/run"
# Past s3fs's one-PUT limit (two of its 50 MiB parts): `pipe_file` sends this as a multipart upload.
MULTIPART = 101 * 2**20


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with s3_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A worker's environment. fsspec reads FSSPEC_S3_* when it is imported, so for this process the same
    variables go through its own parser (`set_conf_env`) into its config."""
    env = {"FSSPEC_S3_ENDPOINT_URL": s3_endpoint, **CREDENTIALS}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parsed: dict[str, dict] = {}
    fsspec.config.set_conf_env(parsed, env)
    monkeypatch.setitem(fsspec.config.conf, "s3", parsed["s3"])
    return env


@pytest.fixture
def bucket(s3_env: dict[str, str]) -> str:
    name = f"retrain-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3").mkdir(name)
    return name


@pytest.fixture
def store(bucket: str) -> CheckpointStore:
    return CheckpointStore(f"s3://{bucket}/checkpoints")


def objects(store: CheckpointStore) -> dict[str, int]:
    """Every object in the store's bucket and its size, straight from the server."""
    bucket = store.root.split("/", 1)[0]
    return {path: info["size"] for path, info in store.fs.find(bucket, detail=True).items()}


def in_another_process(env: dict[str, str], code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_s3_store_writes_objects_directly(store: CheckpointStore) -> None:
    assert store.whole_object_put
    assert not CheckpointStore("file:///tmp/retrain-unused").whole_object_put


def test_put_and_get_round_trip_with_the_sha256_verified(store: CheckpointStore) -> None:
    blob = os.urandom(300_000)
    obj = store.put(f"{RUN}/ckpt_1.pt", blob)
    assert obj.model_dump() == {"key": f"{RUN}/ckpt_1.pt", "sha256": hashlib.sha256(blob).hexdigest(),
                                "bytes": len(blob)}
    assert store.get(obj, within=RUN) == blob
    assert store.size(obj, within=RUN) == len(blob)
    assert store.keys(RUN, ".pt") == [f"{RUN}/ckpt_1.pt"]
    assert list(objects(store)) == [f"{store.root}/{RUN}/ckpt_1.pt"]  # no `.tmp-…` copy left behind

    store.fs.pipe_file(f"{store.root}/{RUN}/ckpt_1.pt", blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(StoreError, match="is corrupt"):
        store.get(obj, within=RUN)
    store.delete(obj, within=RUN)
    with pytest.raises(StoreError, match="could not be read"):
        store.get(obj, within=RUN)
    assert store.read(f"{RUN}/ckpt_1.pt") is None and store.keys(RUN, "") == []


def test_readers_see_no_object_or_the_whole_one_while_a_multipart_upload_runs(store: CheckpointStore) -> None:
    """One thread uploads 101 MiB (a multipart upload); another lists and reads the key all the while,
    through a store of its own: each read is nothing or every byte, and no temporary name is ever listed."""
    blob = os.urandom(MULTIPART)
    key = f"{RUN}/ckpt_big.pt"
    reader = CheckpointStore(store.url)
    seen: list[str] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            listed = reader.keys(RUN, "")
            assert all(k == key for k in listed), listed
            got = reader.read(key)
            assert got is None or got == blob, f"a read of {len(got)} bytes"
            seen.append("whole" if got is not None else "absent")

    watcher = threading.Thread(target=_record_failure, args=(watch, failures))
    watcher.start()
    try:
        obj = store.put(key, blob)
    finally:
        done.set()
        watcher.join(60)
    assert not failures, failures[0]
    assert "absent" in seen, "the reader never looked while the upload ran"
    assert reader.get(obj, within=RUN) == blob
    assert objects(store) == {f"{store.root}/{key}": MULTIPART}


def _record_failure(fn, failures: list[BaseException]) -> None:
    try:
        fn()
    except BaseException as exc:
        failures.append(exc)


def test_an_upload_that_fails_part_way_leaves_nothing(store: CheckpointStore,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A part that fails aborts the multipart upload: no object, and no upload left to complete."""
    real_call = store.fs._call_s3
    parts: list[int] = []

    async def flaky(method, *args, **kwargs):
        if method == "upload_part":
            parts.append(kwargs["PartNumber"])
            if kwargs["PartNumber"] == 2:
                raise ConnectionError("the network went away")
        return await real_call(method, *args, **kwargs)

    monkeypatch.setattr(store.fs, "_call_s3", flaky)
    with pytest.raises(ConnectionError):
        store.put(f"{RUN}/ckpt_half.pt", os.urandom(MULTIPART))
    monkeypatch.undo()
    assert 2 in parts
    assert objects(store) == {}
    bucket = store.root.split("/", 1)[0]
    assert store.fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", []) == []


def test_listings_see_what_another_process_stored_or_deleted_a_moment_ago(
        store: CheckpointStore, s3_env: dict[str, str]) -> None:
    """A long-lived worker lists a run's entry records (pending.py) after another machine's session wrote
    one: the listing, the size and the read must all come from the server, not from a cached listing."""
    assert store.keys(RUN, ".entry.json") == []
    assert store.put(f"{RUN}/a.pt", b"first").bytes == 5
    assert store.keys(RUN, "") == [f"{RUN}/a.pt"]  # the folder's listing, once cached, would now be stale
    write = (f"from workers.session.store import CheckpointStore; s = CheckpointStore({store.url!r}); "
             f"s.put('{RUN}/b.entry.json', b'{{}}'); s.put('{RUN}/b.pt', b'second!'); s.remove('{RUN}/a.pt')")
    in_another_process(s3_env, write)
    assert store.keys(RUN, "") == [f"{RUN}/b.entry.json", f"{RUN}/b.pt"]
    assert store.keys(RUN, ".entry.json") == [f"{RUN}/b.entry.json"]
    second = StoredObject(key=f"{RUN}/b.pt", sha256=hashlib.sha256(b"second!").hexdigest(), bytes=7)
    assert store.size(second, within=RUN) == 7 and store.get(second, within=RUN) == b"second!"
    assert store.read(f"{RUN}/a.pt") is None
    assert CheckpointStore(store.url).keys(RUN, ".pt") == [f"{RUN}/b.pt"]


HOSTILE_KEYS = [
    RUN, f"{RUN}/", f"{RUN}/inflight", f"{RUN}/inflight/",  # the run's folder, and a folder in it
    "octo/demo/run-2/ckpt.pt", "octo/demo/run-2", "octo/demo", "octo", "",  # a sibling run, the repository's
    "octo/victim/run/ckpt.pt", "octo/victim",  # another repository's
    f"{RUN}/../run-2/ckpt.pt", f"{RUN}/../../victim/run/ckpt.pt", f"{RUN}/..", "..", f"{RUN}/.", f"{RUN}//ckpt.pt",
    f"{RUN}/*", f"{RUN}/**", "octo/*/run/ckpt.pt", f"{RUN}/ckpt?.pt", f"{RUN}/[ic]*", f"{RUN}/{{a,inflight}}",
    f"/{RUN}/ckpt.pt", f"s3://{RUN}/ckpt.pt", f"{RUN}/a\\..\\b", f"{RUN}/ckpt\x00.pt",
]


def test_hostile_entries_delete_nothing_but_the_one_object_named(store: CheckpointStore) -> None:
    """Retention deletes what a registry entry names, and entry records by key: on S3, where a folder is a
    prefix and `rm` expands globs, neither may ever take more than the one object named."""
    for key in (f"{RUN}/ckpt.pt", f"{RUN}/inflight/other.pt", f"{RUN}/inflight/x.entry.json",
                "octo/demo/run-2/ckpt.pt", "octo/victim/run/ckpt.pt", "octo/demo/runaway.pt"):
        store.put(key, b"keep me")
    store.fs.pipe_file(f"{store.root.split('/')[0]}/outside-the-store.pt", b"keep me")
    before = objects(store)
    digest = hashlib.sha256(b"keep me").hexdigest()
    for key in HOSTILE_KEYS:
        store.delete(StoredObject(key=key, sha256=digest, bytes=7), within=RUN)
        store.delete(StoredObject(uri=f"{store.url}/{key}", sha256=digest, bytes=7), within=RUN)
        if key not in ("octo/demo/run-2/ckpt.pt", "octo/victim/run/ckpt.pt"):  # `remove` trusts a plain key
            store.remove(key)
        assert objects(store) == before, key
    store.delete(StoredObject(key=f"{RUN}/ckpt.pt", sha256=digest, bytes=7), within=RUN)
    store.remove(f"{RUN}/inflight/x.entry.json")
    assert set(before) - set(objects(store)) == {f"{store.root}/{RUN}/ckpt.pt",
                                                 f"{store.root}/{RUN}/inflight/x.entry.json"}


def test_credentials_reach_no_error_message(s3_env: dict[str, str], bucket: str) -> None:
    missing = CheckpointStore(f"s3://{bucket}-gone/checkpoints")
    texts = []
    for attempt in (lambda: missing.put(f"{RUN}/a.pt", b"x"),
                    lambda: missing.get(StoredObject(key=f"{RUN}/a.pt", sha256="0" * 64, bytes=1), within=RUN)):
        with pytest.raises(Exception) as failed:
            attempt()
        texts.append("".join(str(e) + repr(e) for e in (failed.value, failed.value.__cause__)))
    assert all(SECRET not in text and CREDENTIALS["AWS_ACCESS_KEY_ID"] not in text for text in texts), texts
    assert SECRET not in repr(missing.fs) + missing.url


# -- two sessions, two processes, one bucket -------------------------------------------------------------

RUN_DIR = ".training-progress/nanecho-cached-ci"


def retrain_train(repo: Path, store_url: str, env: dict[str, str], home: Path, max_iters: int) -> str:
    args = [sys.executable, "-m", "app.cli", "train", "--repo", str(repo), "--profile", "ci",
            "--max-iters", str(max_iters), "--store", store_url]
    done = subprocess.run(args, cwd=ROOT, env={**os.environ, **env, "XDG_DATA_HOME": str(home)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_a_session_in_another_process_resumes_from_s3_and_retention_deletes_only_the_dropped(
        tmp_path: Path, store: CheckpointStore, s3_env: dict[str, str]) -> None:
    repo = make_local_repo(tmp_path / "repo")
    config = repo / ".github/retrain.yml"
    config.write_text(config.read_text() + "retention: {max_checkpoints: 1}\n")
    git(repo, "commit", "-qam", "keep one checkpoint")
    neighbours = {"local/other-repo/run/ckpt_x.pt": b"another repository's", "README": b"the operator's"}
    for key, blob in neighbours.items():
        store.put(key, blob)

    first = retrain_train(repo, store.url, s3_env, tmp_path, max_iters=20)
    assert "started from a fresh model" in first
    after_first = objects(store)
    s1 = json.loads(git(repo, "show", f"HEAD:{RUN_DIR}/training_summary.json"))["session"]
    weights_1 = [p for p in after_first if p.endswith(f"/{s1['checkpoint_id']}.pt")]
    assert len(weights_1) == 1, after_first
    run_folder = weights_1[0].removeprefix(f"{store.root}/").rsplit("/", 1)[0]
    neighbours[f"{run_folder.rsplit('/', 1)[0]}/another-run/{s1['checkpoint_id']}.pt"] = b"a sibling run's"
    store.put(*list(neighbours.items())[-1])
    after_first = objects(store)

    second = retrain_train(repo, store.url, s3_env, tmp_path, max_iters=20)
    s2 = json.loads(git(repo, "show", f"HEAD:{RUN_DIR}/training_summary.json"))["session"]
    assert f"resumed from {s1['checkpoint_id']}" in second
    assert s2["resumed_from"] == s1["checkpoint_id"] and s2["start_iteration"] == 20
    assert abs(s2["val_loss_before"] - s1["val_loss_after"]) < 1e-4  # the first's weights, read back from S3
    metadata = json.loads(git(repo, "show", f"HEAD:{RUN_DIR}/cache/metadata.json"))
    assert set(metadata) == {s2["checkpoint_id"]}, "retention kept one checkpoint"

    after_second = objects(store)
    assert weights_1[0] not in after_second, "the dropped checkpoint's weights left the bucket"
    kept = metadata[s2["checkpoint_id"]]["storage"]
    assert after_second[f"{store.root}/{kept['key']}"] == kept["bytes"]
    assert set(after_first) - set(after_second) == set(weights_1), "nothing else was deleted"
    for key, blob in neighbours.items():
        assert store.read(key) == blob
    assert not any(".tmp" in path for path in after_second)

    assert git(repo, "config", "--get", "retrain.store").strip() == store.url
    for text in (first, second, git(repo, "log", "-p", "--all"), (repo / ".git/config").read_text()):
        assert SECRET not in text and CREDENTIALS["AWS_ACCESS_KEY_ID"] not in text
