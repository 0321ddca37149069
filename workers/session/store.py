"""Checkpoint store over fsspec: atomic writes, sha256 recorded and verified on every read.

Object key: `<owner>/<repo>/<run>/<checkpoint_id>.pt` under the store URL.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid

import fsspec
from fsspec.core import url_to_fs

from workers.session.registry import StoredObject


class StoreError(RuntimeError):
    """A stored object is missing, unreadable or not what the registry says it is."""


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
        return StoredObject(uri=f"{self.url}/{key}", sha256=hashlib.sha256(blob).hexdigest(), bytes=len(blob))

    def get(self, obj: StoredObject) -> bytes:
        """The object's bytes, only if they hash to what the registry recorded."""
        fs, path = url_to_fs(obj.uri)
        try:
            with fs.open(path, "rb") as fh:
                blob = fh.read()
        except (FileNotFoundError, OSError) as exc:
            raise StoreError(f"checkpoint object {obj.uri} could not be read: {exc}") from exc
        digest = hashlib.sha256(blob).hexdigest()
        if digest != obj.sha256:
            raise StoreError(f"checkpoint object {obj.uri} is corrupt: sha256 {digest[:12]}… ≠ {obj.sha256[:12]}…")
        return blob

    def delete(self, obj: StoredObject) -> None:
        """Best effort: a leftover object costs space, never correctness."""
        fs, path = url_to_fs(obj.uri)
        with contextlib.suppress(FileNotFoundError, OSError):
            fs.rm(path)

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

    def size(self, obj: StoredObject) -> int | None:
        fs, path = url_to_fs(obj.uri)
        try:
            return int(fs.size(path))
        except (FileNotFoundError, OSError):
            return None
