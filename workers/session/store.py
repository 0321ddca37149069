"""Checkpoint store over fsspec: atomic writes, sha256 recorded and verified on every read.

Object key: `<owner>/<repo>/<run>/<checkpoint_id>.pt` under the store URL, which is the worker's own
(RETRAIN_STORE_URL). A registry entry comes from the repository, which anyone who can push to it
controls; so the objects it names are resolved only inside the run's own folder (`within`), and
anything else (another scheme, an absolute path, `..`, another repository's folder) is refused with a
StoreError before any file system is touched: retention never deletes, and resuming never reads,
anything the run did not write.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import uuid

import fsspec
from fsspec.core import url_to_fs

from workers.session.registry import StoredObject


class StoreError(RuntimeError):
    """A stored object is missing, unreadable, outside its run's folder or not what the registry says it is."""


# Control codes, backslashes, schemes, and glob characters (fsspec expands `*`, `?`, `[` and `{` in `rm` on
# object stores, so one key could name every object of the run).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\*?\[\]{}]|://")


def key_within(key: str, within: str) -> bool:
    """Whether `key` names an object inside the folder `within`: relative, no empty, `.` or `..` part, no
    backslash, control character or scheme. Pure, so the rule is tested without a store."""
    prefix = within.strip("/") + "/"
    parts = key.split("/")
    return (
        key.startswith(prefix) and not _UNSAFE.search(key) and all(part not in ("", ".", "..") for part in parts)
    )


class CheckpointStore:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs: fsspec.AbstractFileSystem
        self.fs, self.root = url_to_fs(self.url)

    def put(self, key: str, blob: bytes) -> StoredObject:
        """Write under a temporary name, then rename: a crash never leaves a half-written object in place."""
        path = f"{self.root}/{key}"
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with self.fs.open(tmp, "wb") as fh:
            fh.write(blob)
        self.fs.mv(tmp, path)
        return StoredObject(key=key, sha256=hashlib.sha256(blob).hexdigest(), bytes=len(blob))

    def key_of(self, obj: StoredObject, within: str) -> str:
        """The object's key, when it lies inside `within`; a StoreError (naming no location) otherwise."""
        key = obj.key
        if key is None and obj.uri is not None and obj.uri.startswith(f"{self.url}/"):
            key = obj.uri.removeprefix(f"{self.url}/")  # written by a build before keys, into this store
        if key is None or not key_within(key, within):
            raise StoreError(f"refused a stored object outside this run's folder {within}/ of the store")
        return key

    def get(self, obj: StoredObject, *, within: str) -> bytes:
        """The object's bytes, only if it lies in `within` and hashes to what the registry recorded."""
        key = self.key_of(obj, within)
        try:
            with self.fs.open(f"{self.root}/{key}", "rb") as fh:
                blob = fh.read()
        except (FileNotFoundError, OSError) as exc:
            raise StoreError(f"checkpoint object {key} could not be read: {type(exc).__name__}") from exc
        digest = hashlib.sha256(blob).hexdigest()
        if digest != obj.sha256:
            raise StoreError(f"checkpoint object {key} is corrupt: sha256 {digest[:12]}… ≠ {obj.sha256[:12]}…")
        return blob

    def delete(self, obj: StoredObject, *, within: str) -> None:
        """Best effort, and only inside `within`: a leftover object costs space, never correctness."""
        with contextlib.suppress(StoreError, FileNotFoundError, OSError, ValueError):
            path = f"{self.root}/{self.key_of(obj, within)}"
            if self.fs.isfile(path):  # never a folder: a registry entry can name one
                self.fs.rm_file(path)

    def read(self, key: str) -> bytes | None:
        """A small object by key (entry records), or None when it is not there."""
        try:
            with self.fs.open(f"{self.root}/{key}", "rb") as fh:
                return fh.read()
        except (FileNotFoundError, OSError):
            return None

    def keys(self, prefix: str, suffix: str) -> list[str]:
        """Keys under `prefix` that end with `suffix`, sorted; none when the folder does not exist."""
        try:
            paths = self.fs.ls(f"{self.root}/{prefix}", detail=False)
        except (FileNotFoundError, OSError):
            return []
        base = f"{self.root}/".lstrip("/")
        keys = [str(p).lstrip("/").removeprefix(base) for p in paths]
        return sorted(k for k in keys if k.endswith(suffix))

    def remove(self, key: str) -> None:
        """Like `delete`, for an object known by key (entry records) rather than by a registry entry."""
        with contextlib.suppress(FileNotFoundError, OSError):
            self.fs.rm(f"{self.root}/{key}")

    def size(self, obj: StoredObject, *, within: str) -> int | None:
        """The object's size, or None when it is missing or lies outside `within`."""
        try:
            return int(self.fs.size(f"{self.root}/{self.key_of(obj, within)}"))
        except (StoreError, FileNotFoundError, OSError):
            return None
