"""Checkpoint store over fsspec: whole objects or none, sha256 recorded and verified on every read.

Object key: `<owner>/<repo>/<run>/<checkpoint_id>.pt` under the store URL, which is the worker's own
(RETRAIN_STORE_URL). A registry entry comes from the repository, which anyone who can push to it
controls; so the objects it names are resolved only inside the run's own folder (`within`), and
anything else (another scheme, an absolute path, `..`, another repository's folder) is refused with a
StoreError before any file system is touched: retention never deletes, and resuming never reads,
anything the run did not write.

Workers on different machines share checkpoints only through the store (an object store, typically
`s3://bucket/prefix`), so what one process wrote a moment ago must be what the next one lists and reads:
listings are never cached (below). The endpoint and credentials are fsspec's and the provider's own
configuration, never part of the URL: `FSSPEC_S3_ENDPOINT_URL` (any `FSSPEC_<PROTOCOL>_<ARG>`),
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, or a workload identity; so neither
reaches a registry entry, `git config retrain.store`, a log line or an error message.
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

# Where one PUT makes a whole object appear at once (a multipart upload too: its parts become visible only
# when it completes), and `mv` is a copy plus a delete: twice the traffic, and a crash between the two
# leaves a `.tmp-…` object behind. Everywhere else (a local disk, NFS, SFTP) a file being written is
# visible half done, and a rename is atomic within a folder: there a temporary name and a rename.
_WHOLE_OBJECT_PUT = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"})


def key_within(key: str, within: str) -> bool:
    """Whether `key` names an object inside the folder `within`: relative, no empty, `.` or `..` part, no
    backslash, control character, glob or scheme. Pure, so the rule is tested without a store."""
    return key.startswith(within.strip("/") + "/") and _plain(key)


def _plain(key: str) -> bool:
    return not _UNSAFE.search(key) and all(part not in ("", ".", "..") for part in key.split("/"))


class CheckpointStore:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs: fsspec.AbstractFileSystem
        # No listings cache: s3fs (and gcsfs) keep directory listings in instances that fsspec caches for
        # the life of the process, and answer `ls`, `info` and `exists` from them; a long-lived worker would
        # then miss the entry records and weights that another machine stored since (pending.py).
        self.fs, self.root = url_to_fs(self.url, use_listings_cache=False)
        protocols = {self.fs.protocol} if isinstance(self.fs.protocol, str) else set(self.fs.protocol)
        self.whole_object_put = bool(protocols & _WHOLE_OBJECT_PUT)

    def put(self, key: str, blob: bytes) -> StoredObject:
        """Write the whole object or nothing: no reader, and no crash, ever leaves part of one in place.

        An object store gets it in one call (`pipe_file`: a PUT, or a multipart upload that is aborted on
        an error instead of being completed); a file system gets a temporary name, then a rename."""
        path = f"{self.root}/{key}"
        if self.whole_object_put:
            self.fs.pipe_file(path, blob)
        else:
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
            blob = self.fs.cat_file(f"{self.root}/{key}")  # one GET: never parts of two versions
        except (FileNotFoundError, OSError) as exc:
            raise StoreError(f"checkpoint object {key} could not be read: {type(exc).__name__}") from exc
        digest = hashlib.sha256(blob).hexdigest()
        if digest != obj.sha256:
            raise StoreError(f"checkpoint object {key} is corrupt: sha256 {digest[:12]}… ≠ {obj.sha256[:12]}…")
        return blob

    def delete(self, obj: StoredObject, *, within: str) -> None:
        """Best effort, and only inside `within`: a leftover object costs space, never correctness."""
        with contextlib.suppress(StoreError, FileNotFoundError, OSError, ValueError):
            self._delete_one(self.key_of(obj, within))

    def _delete_one(self, key: str) -> None:
        """Delete the one object `key` names, if it is one. Never `rm`: on an object store it expands globs
        and, given a prefix, takes what lies under it; and never a folder (a registry entry can name one)."""
        path = f"{self.root}/{key}"
        if self.fs.isfile(path):
            self.fs.rm_file(path)

    def read(self, key: str) -> bytes | None:
        """A small object by key (entry records), or None when it is not there."""
        try:
            return bytes(self.fs.cat_file(f"{self.root}/{key}"))
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
        """Like `delete`, for an object known by key (entry records, as `keys` listed them) rather than by a
        registry entry: one plain key (no glob, `..` or empty part), one object, or nothing."""
        if _plain(key):
            with contextlib.suppress(FileNotFoundError, OSError, ValueError):
                self._delete_one(key)

    def size(self, obj: StoredObject, *, within: str) -> int | None:
        """The object's size, or None when it is missing or lies outside `within`."""
        try:
            return int(self.fs.size(f"{self.root}/{self.key_of(obj, within)}"))
        except (StoreError, FileNotFoundError, OSError):
            return None
