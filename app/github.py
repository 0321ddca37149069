"""The GitHub surface Retrain uses, written once on top of gidgethub: App auth, REST and GraphQL.

Tasks carry installation ids, never tokens; a worker mints its own token here when it starts.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

import aiohttp
from gidgethub import BadRequest, GitHubBroken, QueryError, sansio
from gidgethub.aiohttp import GitHubAPI
from gidgethub.apps import get_installation_access_token

from app.settings import Settings

USER_AGENT = "retrain-app"
RAW = "application/vnd.github.raw+json"

HEAD_QUERY = """
query($owner: String!, $name: String!, $qualifiedName: String!) {
  repository(owner: $owner, name: $name) {
    defaultBranchRef { name target { oid } }
    ref(qualifiedName: $qualifiedName) { name target { oid } }
  }
}
"""

COMMIT_MUTATION = """
mutation($input: CreateCommitOnBranchInput!) {
  createCommitOnBranch(input: $input) { commit { oid url } }
}
"""


class StaleHead(RuntimeError):
    """The branch moved since it was read: re-read, merge and try again."""


class BranchNotFound(RuntimeError):
    pass


@dataclass(frozen=True)
class BranchHead:
    name: str
    oid: str


def split_repo(full_name: str) -> tuple[str, str]:
    owner, _, name = full_name.partition("/")
    if not owner or not name or "/" in name:
        raise ValueError(f"not an owner/name repository: {full_name!r}")
    return owner, name


class InstallationToken:
    """An installation token, minted from the App JWT and re-minted shortly before it expires.

    Sessions can train for longer than a token lives (one hour), so nothing holds on to a token string.
    """

    REFRESH_MARGIN = timedelta(minutes=5)

    def __init__(self, session: aiohttp.ClientSession, settings: Settings, installation_id: int) -> None:
        self._app_gh = GitHubAPI(session, USER_AGENT, base_url=settings.github_api_url)
        self._settings = settings
        self._installation_id = installation_id
        self._token: str | None = None
        self._expires_at = datetime.min.replace(tzinfo=UTC)

    async def get(self) -> str:
        if self._token is None or datetime.now(UTC) >= self._expires_at - self.REFRESH_MARGIN:
            app_id, private_key = self._settings.require_app()
            minted = await get_installation_access_token(
                self._app_gh, installation_id=str(self._installation_id), app_id=app_id, private_key=private_key
            )
            self._token = str(minted["token"])
            self._expires_at = datetime.fromisoformat(str(minted["expires_at"]).replace("Z", "+00:00"))
        return self._token


class GitHubClient:
    """One installation's view of GitHub. Construct with `installation_client`."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings, token: InstallationToken) -> None:
        self._session = session
        self._token = token
        self._graphql_url = settings.graphql_url
        self.gh = GitHubAPI(session, USER_AGENT, base_url=settings.github_api_url)

    async def _authorize(self) -> None:
        self.gh.oauth_token = await self._token.get()

    # -- REST ------------------------------------------------------------------------------------------
    async def permission(self, repo: str, username: str) -> str:
        """The user's repository permission: admin, write, read or none."""
        await self._authorize()
        owner, name = split_repo(repo)
        try:
            data = await self.gh.getitem(
                "/repos/{owner}/{repo}/collaborators/{username}/permission",
                {"owner": owner, "repo": name, "username": username},
            )
        except BadRequest as exc:
            if exc.status_code == HTTPStatus.NOT_FOUND:  # not a user GitHub knows: no permission at all
                return "none"
            raise
        return str(data.get("permission", "none"))

    async def add_reaction(self, repo: str, comment_id: int, content: str) -> None:
        await self._authorize()
        owner, name = split_repo(repo)
        await self.gh.post(
            "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions",
            {"owner": owner, "repo": name, "comment_id": comment_id},
            data={"content": content},
        )

    async def create_comment(self, repo: str, issue_number: int, body: str) -> dict[str, Any]:
        await self._authorize()
        owner, name = split_repo(repo)
        return await self.gh.post(
            "/repos/{owner}/{repo}/issues/{issue_number}/comments",
            {"owner": owner, "repo": name, "issue_number": issue_number},
            data={"body": body},
        )

    async def read_file(self, repo: str, path: str, ref: str | None) -> bytes | None:
        """A file's bytes at `ref` (default branch when None), or None when it does not exist there.

        The raw media type has no 1 MB limit, unlike the JSON contents object.
        """
        await self._authorize()
        owner, name = split_repo(repo)
        url = sansio.format_url(
            "/repos/{owner}/{repo}/contents/{+path}{?ref}",
            {"owner": owner, "repo": name, "path": path, "ref": ref},
            base_url=self.gh.base_url,
        )
        async with self._session.get(url, headers=self._headers(RAW)) as resp:
            if resp.status == 404:
                return None
            await self._raise_for_status(resp)
            return await resp.read()

    async def tarball(self, repo: str, ref: str) -> bytes:
        """The repository's files at `ref` as a gzipped tar (one request, one consistent snapshot)."""
        await self._authorize()
        owner, name = split_repo(repo)
        url = sansio.format_url(
            "/repos/{owner}/{repo}/tarball/{ref}", {"owner": owner, "repo": name, "ref": ref},
            base_url=self.gh.base_url,
        )
        async with self._session.get(url, headers=self._headers(sansio.accept_format())) as resp:
            await self._raise_for_status(resp)
            return await resp.read()

    # -- GraphQL ---------------------------------------------------------------------------------------
    async def branch_head(self, repo: str, branch: str | None) -> BranchHead:
        """The named branch's head, or the default branch's when `branch` is None."""
        await self._authorize()
        owner, name = split_repo(repo)
        # One query serves both cases; without a branch name the `ref` field is simply not used.
        qualified = f"refs/heads/{branch}" if branch else "refs/heads/"
        data = await self.gh.graphql(
            HEAD_QUERY, endpoint=self._graphql_url, owner=owner, name=name, qualifiedName=qualified
        )
        repository = data.get("repository") or {}
        ref = repository.get("ref") if branch else repository.get("defaultBranchRef")
        if not ref or not ref.get("target"):
            raise BranchNotFound(f"branch {branch or '(default)'} not found in {repo}")
        return BranchHead(name=ref["name"], oid=ref["target"]["oid"])

    async def commit_files(
        self, repo: str, branch: str, expected_head: str, files: Mapping[str, bytes], headline: str, body: str
    ) -> str:
        """All files in one commit, compare-and-swap on the branch head; the new commit's oid."""
        await self._authorize()
        payload = {
            "branch": {"repositoryNameWithOwner": repo, "branchName": branch},
            "expectedHeadOid": expected_head,
            "message": {"headline": headline, "body": body},
            "fileChanges": {
                "additions": [
                    {"path": path, "contents": base64.b64encode(content).decode()}
                    for path, content in sorted(files.items())
                ]
            },
        }
        try:
            data = await self.gh.graphql(COMMIT_MUTATION, endpoint=self._graphql_url, input=payload)
        except QueryError as exc:
            errors = (exc.response or {}).get("errors") or []
            if any(err.get("type") == "STALE_DATA" for err in errors):
                raise StaleHead(f"{repo}@{branch} moved past {expected_head[:12]}") from exc
            raise
        return str(data["createCommitOnBranch"]["commit"]["oid"])

    # -- plumbing --------------------------------------------------------------------------------------
    def _headers(self, accept: str) -> dict[str, str]:
        return dict(sansio.create_headers(USER_AGENT, accept=accept, oauth_token=self.gh.oauth_token))

    @staticmethod
    async def _raise_for_status(resp: aiohttp.ClientResponse) -> None:
        """The same exceptions gidgethub raises, for the two calls that bypass its JSON decoding."""
        if resp.status < 400:
            return
        text = (await resp.text(errors="replace"))[:300]
        error = GitHubBroken if resp.status >= 500 else BadRequest
        raise error(HTTPStatus(resp.status), f"{resp.method} {resp.url.path}: {text}")


@asynccontextmanager
async def installation_client(settings: Settings, installation_id: int) -> AsyncIterator[GitHubClient]:
    """A client holding a fresh installation token; the token never leaves this object."""
    settings.require_app()  # fail before opening anything when the App is not configured
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield GitHubClient(session, settings, InstallationToken(session, settings, installation_id))
