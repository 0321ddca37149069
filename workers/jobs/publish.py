"""Publishing a checkpoint's export folder as a GitHub Release: one release per tag, its files as assets,
the model card as the notes.

Idempotent, because a session may be delivered again: the release with the tag is reused (draft or
published), files already there whole (same name, size and digest) are skipped, a partial one is replaced.
The folder is checked whole before anything is created, so a file GitHub would refuse (over 2 GiB, a
name GitHub would rename) or one that is not a plain file leaves no half-made release behind.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.github.releases import MAX_ASSET_BYTES, GitHubReleases, PublishError, check_asset_size, sha256_of

if TYPE_CHECKING:
    from app.github.client import GitHubClient

log = logging.getLogger(__name__)
MAX_FILES = 100  # an export is a handful of files; GitHub's own cap is 1,000 assets a release
# GitHub renames asset names with other characters, or leading and trailing periods; then the name would not
# find the asset again, so such a file is refused instead.
ASSET_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,254}(?<!\.)")
CONTENT_TYPES = {".json": "application/json", ".md": "text/markdown", ".txt": "text/plain"}


@dataclass(frozen=True)
class PublishedRelease:
    """What publishing did: the release, and which of the folder's files it uploaded or found there."""

    id: int
    tag: str
    html_url: str
    uploaded: tuple[str, ...]
    skipped: tuple[str, ...]


def export_files(folder: Path, max_bytes: int = MAX_ASSET_BYTES) -> list[Path]:
    """The folder's files in name order, each one GitHub would take as an asset; PublishError (or
    AssetTooLarge) naming the first one that is not."""
    if not folder.is_dir() or folder.is_symlink():
        raise PublishError(f"{folder} is not a folder to publish")
    files = sorted(folder.iterdir(), key=lambda p: p.name)
    if not files:
        raise PublishError(f"{folder} is empty: there is nothing to publish")
    if len(files) > MAX_FILES:
        raise PublishError(f"{folder} holds {len(files)} entries; an export to publish has at most {MAX_FILES}")
    for path in files:
        if path.is_symlink():
            raise PublishError(f"{path.name} is a symbolic link; only plain files are published")
        if not path.is_file():
            raise PublishError(f"{path.name} is not a plain file (a folder?); only the folder's own files are "
                               "published")
        if not ASSET_NAME.fullmatch(path.name):
            raise PublishError(f"{path.name!r} is not a name GitHub keeps for a release asset (letters, digits, "
                               "'.', '-', '_', '+'; no leading or trailing '.')")
        check_asset_size(path, path.stat().st_size, max_bytes)
    return files


async def publish_folder(client: GitHubClient, repo: str, *, tag: str, name: str, commit_sha: str, notes: str,
                         folder: Path, max_asset_bytes: int = MAX_ASSET_BYTES) -> PublishedRelease:
    """Publish every file of `folder` as an asset of the release tagged `tag` at `commit_sha`, named `name`,
    with `notes` (the model card) as its body. Made as a draft, published once every asset is there."""
    files = export_files(folder, max_asset_bytes)
    releases = GitHubReleases(client)
    where = {"repo": repo, "tag": tag}
    release = await releases.find_release(repo, tag)
    if release is None:
        release = await releases.create_release(repo, tag=tag, commit_sha=commit_sha, name=name, notes=notes)
        log.info("created draft release %s of %s", tag, repo, extra=where)
    else:
        log.info("reusing release %s of %s (%s)", tag, repo, "draft" if release.draft else "published", extra=where)
    there = {a.name: a for a in await releases.list_assets(repo, release.id)}
    uploaded: list[str] = []
    skipped: list[str] = []
    for path in files:
        size, sha256 = path.stat().st_size, await asyncio.to_thread(sha256_of, path)
        found = there.get(path.name)
        if found is not None and found.holds(size, sha256):
            log.info("asset %s (%s bytes) is already on release %s", path.name, f"{size:,}", tag, extra=where)
            skipped.append(path.name)
            continue
        if found is not None:
            log.info("replacing asset %s on release %s (%s, %s bytes; the file has %s)", path.name, tag,
                     found.state, f"{found.size:,}", f"{size:,}", extra=where)
            await releases.delete_asset(repo, found.id)
        log.info("uploading %s (%s bytes) to release %s", path.name, f"{size:,}", tag, extra=where)
        content_type = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
        await releases.upload_asset(repo, release, path, sha256=sha256, content_type=content_type,
                                    max_bytes=max_asset_bytes)
        uploaded.append(path.name)
    if release.draft:
        release = await releases.publish_release(repo, release)
        log.info("published release %s of %s: %s", tag, repo, release.html_url, extra=where)
    return PublishedRelease(release.id, release.tag, release.html_url, tuple(uploaded), tuple(skipped))
