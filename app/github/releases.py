"""GitHub Releases for publishing a model export: find a release by tag, create one as a draft, list,
upload and delete its assets, then publish it.

Kept beside the client (`client.py`, which is long enough) and built on its client's plumbing: the same token,
retry rules and API version. Why drafts: with a repository's "immutable releases" on (GA in October 2025)
a published release's assets can no longer be added, so creating it published and uploading afterwards
fails with 422 "Cannot upload assets to an immutable release"; a draft is also unseen (no notification,
never "latest") until every asset is there. A draft's tag is made when it is published.

Every call that creates something survives a lost answer: a draft is looked for by its tag before it is
created again, an asset by its name (and its size and digest) before it is uploaded again.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from gidgethub import BadRequest, sansio

from app.errors import RetrainError
from app.github.client import split_repo
from app.github.retry import create_once, with_retries
from app.github.text_limits import fit
from app.telemetry import TELEMETRY

if TYPE_CHECKING:
    from app.github.client import GitHubClient

log = logging.getLogger(__name__)
MAX_ASSET_BYTES = 2 * 1024**3 - 1  # "each file included in a release must be under 2 GiB"
MAX_RELEASE_BODY_CHARS = 125_000  # GitHub refuses a longer release body with a 422
MAX_LISTED_RELEASES = 1000  # how far back a draft is looked for (releases are listed newest first)
UPLOAD_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=600)  # a 2 GiB body takes a while
_HASH_CHUNK = 1024 * 1024


class AssetTooLarge(RetrainError):
    """A file of the export is over GitHub's limit for one release asset; nothing of it was uploaded."""


class PublishError(RetrainError):
    """GitHub refused a step of publishing, or an upload arrived other than it was sent."""


@dataclass(frozen=True)
class Asset:
    id: int
    name: str
    size: int
    state: str  # "uploaded" once all its bytes arrived; anything else is a partial upload
    digest: str | None  # "sha256:<hex>", computed by GitHub; None on assets from before GitHub kept it

    @classmethod
    def of(cls, data: dict[str, Any]) -> Asset:
        return cls(int(data["id"]), str(data["name"]), int(data["size"]), str(data.get("state") or ""),
                   data.get("digest"))

    def holds(self, size: int, sha256: str) -> bool:
        """Whether this asset is that file, whole: uploaded, of its size, and of its digest when known."""
        return self.state == "uploaded" and self.size == size and self.digest in (None, f"sha256:{sha256}")


@dataclass(frozen=True)
class Release:
    id: int
    tag: str
    draft: bool
    html_url: str
    upload_url: str  # an RFC 6570 template: https://uploads.github.com/repos/o/r/releases/1/assets{?name,label}

    @classmethod
    def of(cls, data: dict[str, Any]) -> Release:
        return cls(int(data["id"]), str(data["tag_name"]), bool(data["draft"]), str(data["html_url"]),
                   str(data["upload_url"]))


def sha256_of(path: Path) -> str:
    """The file's sha256, read in chunks (an export's weights may be gigabytes); blocking."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_asset_size(path: Path, size: int, max_bytes: int = MAX_ASSET_BYTES) -> None:
    if size > max_bytes:
        raise AssetTooLarge(f"{path.name} is {size:,} bytes; GitHub takes release assets under 2 GiB (at most "
                            f"{max_bytes:,} bytes here), so it cannot be published as a release asset. Publish "
                            "the export to the Hugging Face Hub instead (docs/publishing.md).")


class GitHubReleases:
    """The Releases API of one installation, through its `GitHubClient`."""

    def __init__(self, client: GitHubClient) -> None:
        self._client = client
        self._gh = client.gh

    def _where(self, repo: str, **more: Any) -> dict[str, Any]:
        owner, name = split_repo(repo)
        return {"owner": owner, "repo": name, **more}

    async def find_release(self, repo: str, tag: str) -> Release | None:
        """The release tagged `tag`: a published one (`releases/tags/{tag}`, which sees no drafts), else a
        draft among the newest MAX_LISTED_RELEASES; None when neither exists."""
        return await self._published(repo, tag) or await self._draft(repo, tag)

    @with_retries
    async def _published(self, repo: str, tag: str) -> Release | None:
        await self._client._authorize()
        try:
            data = await self._gh.getitem("/repos/{owner}/{repo}/releases/tags/{tag}", self._where(repo, tag=tag))
        except BadRequest as exc:
            if exc.status_code == HTTPStatus.NOT_FOUND:
                return None
            raise
        return Release.of(data)

    @with_retries
    async def _draft(self, repo: str, tag: str) -> Release | None:
        await self._client._authorize()
        seen = 0
        async for data in self._gh.getiter("/repos/{owner}/{repo}/releases{?per_page}",
                                           self._where(repo, per_page=100)):
            if data.get("tag_name") == tag:
                return Release.of(data)
            seen += 1
            if seen >= MAX_LISTED_RELEASES:
                break
        return None

    async def create_release(self, repo: str, *, tag: str, commit_sha: str, name: str, notes: str,
                             look_first: bool = False) -> Release:
        """A draft release tagged `tag` at `commit_sha`, `notes` as its body (cut to GitHub's 125,000
        characters, saying so). One, even when an attempt's answer is lost: the tag finds it again."""

        async def post() -> Release:
            await self._client._authorize()
            data = await self._gh.post("/repos/{owner}/{repo}/releases", self._where(repo), data={
                "tag_name": tag, "target_commitish": commit_sha, "name": name,
                "body": fit(notes, MAX_RELEASE_BODY_CHARS), "draft": True})
            return Release.of(data)

        return await create_once(post, lambda: self.find_release(repo, tag), look_first=look_first)

    @with_retries
    async def list_assets(self, repo: str, release_id: int) -> list[Asset]:
        await self._client._authorize()
        return [Asset.of(a) async for a in self._gh.getiter(
            "/repos/{owner}/{repo}/releases/{release_id}/assets{?per_page}",
            self._where(repo, release_id=release_id, per_page=100))]

    @with_retries
    async def delete_asset(self, repo: str, asset_id: int) -> None:
        """Delete an asset (a partial upload, or another file's under the same name); gone already is fine."""
        await self._client._authorize()
        try:
            await self._gh.delete("/repos/{owner}/{repo}/releases/assets/{asset_id}",
                                  self._where(repo, asset_id=asset_id))
        except BadRequest as exc:
            if exc.status_code != HTTPStatus.NOT_FOUND:
                raise

    @with_retries
    async def publish_release(self, repo: str, release: Release) -> Release:
        """Publish a draft (its tag is made now); publishing again is harmless, so a lost answer is not."""
        await self._client._authorize()
        try:
            data = await self._gh.patch("/repos/{owner}/{repo}/releases/{release_id}",
                                        self._where(repo, release_id=release.id), data={"draft": False})
        except BadRequest as exc:
            if exc.status_code == HTTPStatus.UNPROCESSABLE_ENTITY:
                raise PublishError(f"GitHub refused to publish release `{release.tag}`: {exc}") from exc
            raise
        return Release.of(data)

    async def upload_asset(self, repo: str, release: Release, path: Path, *, sha256: str,
                           content_type: str = "application/octet-stream",
                           max_bytes: int = MAX_ASSET_BYTES) -> Asset:
        """Upload one file as the release's asset of the same name, streamed from disk. Refused before any
        byte goes when it is over GitHub's limit. After a lost answer, an asset of that name holding the
        file is taken as the upload's, and a partial one is deleted and uploaded again."""
        size = path.stat().st_size
        check_asset_size(path, size, max_bytes)
        url = self._upload_url(release, path.name)

        async def upload() -> Asset:
            await self._client._authorize()
            headers = {**self._client._headers("application/vnd.github+json"), "Content-Type": content_type,
                       "Content-Length": str(size)}
            with path.open("rb") as body:
                async with self._client._session.post(url, data=body, headers=headers,
                                                      timeout=UPLOAD_TIMEOUT) as resp:
                    TELEMETRY.count("retrain_github_api_calls_total", method="POST", status=str(resp.status))
                    if resp.status == HTTPStatus.UNPROCESSABLE_ENTITY:
                        text = (await resp.text(errors="replace"))[:300]
                        raise PublishError(f"GitHub refused {path.name} as an asset of release `{release.tag}`: "
                                           f"{text}")
                    await self._client._raise_for_status(resp)
                    return Asset.of(await resp.json())

        async def find() -> Asset | None:
            for asset in await self.list_assets(repo, release.id):
                if asset.name == path.name:
                    if asset.holds(size, sha256):
                        return asset
                    log.info("deleting a partial upload of %s (%s of %s bytes, %s)", path.name, f"{asset.size:,}",
                             f"{size:,}", asset.state)
                    await self.delete_asset(repo, asset.id)
            return None

        asset = await create_once(upload, find)
        if not asset.holds(size, sha256):
            raise PublishError(f"{path.name} arrived other than it was sent (GitHub says {asset.size:,} bytes, "
                               f"{asset.digest}; sent {size:,} bytes, sha256:{sha256})")
        return asset

    def _upload_url(self, release: Release, name: str) -> str:
        """The release's `upload_url` with the name filled in, when it is on the configured upload host: the
        request carries the installation token, which goes nowhere else."""
        url = sansio.format_url(release.upload_url, {"name": name}, base_url=self._client.uploads_url)
        want, got = urlsplit(self._client.uploads_url), urlsplit(url)
        if (got.scheme, got.netloc) != (want.scheme, want.netloc):
            raise PublishError(f"release `{release.tag}` names an upload host ({got.scheme}://{got.netloc}) other "
                               f"than the configured one ({want.scheme}://{want.netloc}); not uploading there")
        return url
