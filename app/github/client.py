"""The GitHub surface Retrain uses, written once on top of gidgethub: REST, GraphQL, check runs, and
the Git Data API as the fallback for committing. Every call retries per GitHub's rate-limit rules.

Tasks carry installation ids, never tokens; a client mints (or reuses) its own narrowed token.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

import aiohttp
from gidgethub import BadRequest, GitHubBroken, GraphQLException, QueryError, sansio
from gidgethub.aiohttp import GitHubAPI

from app.config.settings import Settings
from app.errors import RetrainError
from app.github.auth import InstallationToken, TokenCache
from app.github.retry import (
    GraphQLRateLimited,
    create_once,
    is_rate_limited,
    requested_wait_s,
    seconds,
    with_retries,
)
from app.github.text_limits import MAX_CHECK_TEXT_BYTES, MAX_COMMENT_CHARS, fit
from app.telemetry import TELEMETRY

log = logging.getLogger(__name__)
NOT_FAST_FORWARD = "not a fast forward"  # GitHub's 422 for a ref that moved: "Update is not a fast forward"
ROLE_NAMES = ("admin", "maintain", "write", "triage", "read")
USER_AGENT = "retrain-app"
API_VERSION = "2022-11-28"  # the REST API version this client is written against, sent on every request
RAW = "application/vnd.github.raw+json"
CLOCK_SKEW = timedelta(minutes=5)  # between this machine's clock and GitHub's `updated_at`

HEAD_QUERY = """
query($owner: String!, $name: String!, $qualifiedName: String!) {
  repository(owner: $owner, name: $name) {
    defaultBranchRef { name target { oid } }
    ref(qualifiedName: $qualifiedName) { name target { oid } }
  }
}
"""

# One page of branches with each head's copy of one file: a reference check reads every branch's registry
# in one request per 100 branches. `Blob.text` is null for a binary blob and cut short (`isTruncated`) past
# GitHub's limit; those few are read again through the contents API (GitHubRepository).
BRANCH_FILES_QUERY = """
query BranchFiles($owner: String!, $name: String!, $path: String!, $first: Int!, $after: String) {
  repository(owner: $owner, name: $name) {
    refs(refPrefix: "refs/heads/", first: $first, after: $after) {
      pageInfo { hasNextPage endCursor }
      nodes {
        name
        target { oid ... on Commit { file(path: $path) { object { ... on Blob { byteSize text isTruncated } } } } }
      }
    }
  }
}
"""

# The newest commits on a branch that touched one path, with their messages: `/retrain history` finds each
# session's commit by the `Session: <id>` line its message carries.
PATH_COMMITS_QUERY = """
query PathCommits($owner: String!, $name: String!, $qualifiedName: String!, $path: String!, $first: Int!) {
  repository(owner: $owner, name: $name) {
    defaultBranchRef { target { ... on Commit { history(first: $first, path: $path) { nodes { oid message } } } } }
    ref(qualifiedName: $qualifiedName) {
      target { ... on Commit { history(first: $first, path: $path) { nodes { oid message } } } }
    }
  }
}
"""

COMMIT_MUTATION = """
mutation($input: CreateCommitOnBranchInput!) {
  createCommitOnBranch(input: $input) { commit { oid url } }
}
"""


class MeteredGitHubAPI(GitHubAPI):
    """gidgethub's aiohttp client, counting calls by method and status and keeping the rate limit left.

    It also keeps what gidgethub drops from GraphQL answers and GitHub's rate-limit rules need: the headers
    of a 403/429 (`retry-after` of a secondary limit; gidgethub's BadGraphQLRequest carries none) and the
    reset of a RATE_LIMITED answer. Every gidgethub call passes through `_request`, so the API version is
    named here once: without it GitHub serves its default version, which may change under the App.
    """

    async def _request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> tuple[int, Mapping[str, str], bytes]:
        headers = {**headers, "x-github-api-version": API_VERSION}
        status, response_headers, data = await super()._request(method, url, headers, body)
        TELEMETRY.count("retrain_github_api_calls_total", method=method, status=str(status))
        remaining = response_headers.get("x-ratelimit-remaining")
        if remaining is not None and remaining.isdigit():
            resource = response_headers.get("x-ratelimit-resource", "core")
            TELEMETRY.gauge("retrain_github_rate_limit_remaining", float(remaining), resource=resource)
        if method == "POST" and url.endswith("/graphql"):
            if status >= HTTPStatus.INTERNAL_SERVER_ERROR:  # gidgethub would first fail to decode an HTML page
                raise GitHubBroken(HTTPStatus(status))
            if status in (HTTPStatus.FORBIDDEN, 429):
                limited = BadRequest(HTTPStatus(status), _message_of(data), headers=response_headers)
                if requested_wait_s(limited) is not None:  # a rate limit; any other 403 stays gidgethub's
                    raise limited
            if status == HTTPStatus.OK and "retry-after" in response_headers:  # a limit told in a 200
                answer = _json_of(data)
                wait = seconds(response_headers["retry-after"])
                if isinstance(answer, dict) and is_rate_limited(QueryError(answer)) and wait is not None:
                    raise GraphQLRateLimited(answer, None, wait)
        return status, response_headers, data

    async def graphql(self, query: str, *, endpoint: str = "https://api.github.com/graphql", **variables: Any) -> Any:
        try:
            return await super().graphql(query, endpoint=endpoint, **variables)
        except GraphQLRateLimited:
            raise
        except QueryError as exc:
            if not is_rate_limited(exc):
                raise
            # gidgethub read this answer's rate-limit headers into self.rate_limit just before raising; their
            # reset is the time to wait for only when they say the points are spent (else: a secondary limit).
            limit = self.rate_limit  # (a RateLimit is falsy when spent: compare with None)
            reset = limit.reset_datetime.timestamp() if limit is not None and limit.remaining == 0 else None
            raise GraphQLRateLimited(exc.response, reset) from exc


def _json_of(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def _message_of(data: bytes) -> str:
    """GitHub's error message from a JSON error body, for the exception (never the request)."""
    answer = _json_of(data)
    message = answer.get("message") if isinstance(answer, dict) else None
    return str(message) if message else data[:200].decode(errors="replace")


class StaleHead(RuntimeError):
    """The branch moved since it was read: re-read, merge and try again."""


class BranchNotFound(RuntimeError):
    pass


class CommitRefused(RetrainError):
    """GitHub refused the ref update for another reason than a moved branch: branch protection, a ruleset,
    required checks or signatures. Retrying cannot help; the person who set the rule can."""


@dataclass(frozen=True)
class BranchHead:
    name: str
    oid: str


@dataclass(frozen=True)
class BranchFile:
    """One branch's copy of a file at its head. `text` is None when the branch has no such file, and also
    when GitHub would not give the text whole (a binary blob, or one cut short): then `exists` is True and
    the caller reads it through the contents API at `oid`."""

    branch: str
    oid: str
    exists: bool
    text: str | None
    size: int = 0  # the file's bytes, known before reading it again


@dataclass(frozen=True)
class PullRequest:
    """What a session needs of a pull request: where its text is and where it would merge."""

    number: int
    head_sha: str
    head_ref: str
    head_repo: str | None  # owner/name; None when the fork was deleted
    base_ref: str
    state: str
    merged: bool

    def from_fork(self, repo: str) -> bool:
        return self.head_repo != repo


@dataclass(frozen=True)
class CheckRun:
    id: int
    html_url: str | None


def _fit_output(fields: dict[str, Any]) -> dict[str, Any]:
    output = fields.get("output")
    if not isinstance(output, dict):
        return fields
    fitted = {k: fit(v, MAX_CHECK_TEXT_BYTES, in_bytes=True) if k in ("summary", "text") and isinstance(v, str)
              else v for k, v in output.items()}
    return {**fields, "output": fitted}


def split_repo(full_name: str) -> tuple[str, str]:
    owner, _, name = full_name.partition("/")
    if not owner or not name or "/" in name:
        raise ValueError(f"not an owner/name repository: {full_name!r}")
    return owner, name


def _is_stale(exc: GraphQLException) -> bool:
    errors = (getattr(exc, "response", None) or {}).get("errors") or []
    return any(err.get("type") == "STALE_DATA" for err in errors)


class GitHubClient:
    """One installation's view of GitHub. Construct with `installation_client`."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings, token: InstallationToken) -> None:
        self._session = session
        self._token = token
        self._graphql_url = settings.graphql_url
        self.uploads_url = settings.uploads_url  # release assets (app/github/releases.py) go there, and only there
        self.gh = MeteredGitHubAPI(session, USER_AGENT, base_url=settings.github_api_url)

    async def _authorize(self) -> None:
        self.gh.oauth_token = await self._token.get()

    def _url(self, template: str, **values: Any) -> str:
        return sansio.format_url(template, values, base_url=self.gh.base_url)

    # -- issues and reactions ---------------------------------------------------------------------------
    @with_retries
    async def permission(self, repo: str, username: str) -> str:
        """The user's repository role: admin, maintain, write, triage, read or none."""
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
        # `role_name` is the real role (maintain, triage, or a custom role's name); the legacy `permission`
        # folds maintain into write and triage into read. A custom role counts as its legacy permission.
        role = data.get("role_name")
        return role if role in ROLE_NAMES else str(data.get("permission", "none"))

    @with_retries
    async def pull_request(self, repo: str, number: int) -> PullRequest:
        """The pull request as GitHub has it now (needs the `pull_requests` permission, read)."""
        await self._authorize()
        owner, name = split_repo(repo)
        data = await self.gh.getitem("/repos/{owner}/{repo}/pulls/{number}",
                                     {"owner": owner, "repo": name, "number": str(number)})
        head, base = data["head"], data["base"]
        return PullRequest(
            number=int(data["number"]), head_sha=str(head["sha"]), head_ref=str(head["ref"]),
            head_repo=(head.get("repo") or {}).get("full_name"), base_ref=str(base["ref"]),
            state=str(data["state"]), merged=bool(data.get("merged")),
        )

    @with_retries
    async def add_reaction(self, repo: str, comment_id: int, content: str) -> None:
        await self._authorize()
        owner, name = split_repo(repo)
        await self.gh.post(
            "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions",
            {"owner": owner, "repo": name, "comment_id": comment_id},
            data={"content": content},
        )

    @with_retries
    async def update_comment(self, repo: str, comment_id: int, body: str) -> None:
        """Edit one of the App's comments in place (the same edit twice is harmless, so it is retried)."""
        await self._authorize()
        owner, name = split_repo(repo)
        await self.gh.patch("/repos/{owner}/{repo}/issues/comments/{comment_id}",
                            {"owner": owner, "repo": name, "comment_id": comment_id},
                            data={"body": fit(body, MAX_COMMENT_CHARS)})

    async def create_comment(self, repo: str, issue_number: int, body: str) -> dict[str, Any]:
        """One comment, even when an attempt's answer is lost: the body ends with an invisible marker, looked
        for among the issue's recent comments before posting again."""
        owner, name = split_repo(repo)
        where = {"owner": owner, "repo": name, "issue_number": issue_number}
        marker = f"<!-- retrain:{uuid.uuid4().hex} -->"
        since = (datetime.now(UTC) - CLOCK_SKEW).strftime("%Y-%m-%dT%H:%M:%SZ")

        async def post() -> dict[str, Any]:
            await self._authorize()
            fitted = fit(body, MAX_COMMENT_CHARS, room=len(marker) + 2)
            return await self.gh.post("/repos/{owner}/{repo}/issues/{issue_number}/comments", where,
                                      data={"body": f"{fitted}\n\n{marker}"})

        async def find() -> dict[str, Any] | None:
            await self._authorize()
            async for comment in self.gh.getiter(
                "/repos/{owner}/{repo}/issues/{issue_number}/comments{?since,per_page}",
                {**where, "since": since, "per_page": 100},
            ):
                if marker in str(comment.get("body") or ""):
                    return dict(comment)
            return None

        return await create_once(post, find)

    # -- check runs -------------------------------------------------------------------------------------
    async def create_check_run(self, repo: str, *, name: str, head_sha: str, external_id: str,
                               look_first: bool = False, **fields: Any) -> CheckRun:
        """One check run, even when an attempt's answer is lost: `external_id` (unique per call, or per
        session) is looked for among the commit's check runs of that name before creating again — a second,
        forever-queued check run would block a required check. `look_first`: look before the first attempt
        too (an events task carried out again after a failure that came later than the check run)."""
        owner, repo_name = split_repo(repo)
        where = {"owner": owner, "repo": repo_name}

        async def post() -> CheckRun:
            await self._authorize()
            data = await self.gh.post("/repos/{owner}/{repo}/check-runs", where, data={
                "name": name, "head_sha": head_sha, "external_id": external_id, **_fit_output(fields)})
            return CheckRun(int(data["id"]), data.get("html_url"))

        async def find() -> CheckRun | None:
            await self._authorize()
            async for run in self.gh.getiter(
                "/repos/{owner}/{repo}/commits/{ref}/check-runs{?check_name,filter,per_page}",
                {**where, "ref": head_sha, "check_name": name, "filter": "all", "per_page": 100},
                iterable_key="check_runs",
            ):
                if run.get("external_id") == external_id:
                    return CheckRun(int(run["id"]), run.get("html_url"))
            return None

        return await create_once(post, find, look_first=look_first)

    @with_retries
    async def update_check_run(self, repo: str, check_run_id: int, **fields: Any) -> None:
        await self._authorize()
        owner, name = split_repo(repo)
        await self.gh.patch(
            "/repos/{owner}/{repo}/check-runs/{check_run_id}",
            {"owner": owner, "repo": name, "check_run_id": check_run_id},
            data=_fit_output(fields),
        )

    # -- contents ---------------------------------------------------------------------------------------
    @with_retries
    async def read_file(self, repo: str, path: str, ref: str | None) -> bytes | None:
        """A file's bytes at `ref` (default branch when None), or None when it does not exist there.

        The raw media type has no 1 MB limit, unlike the JSON contents object.
        """
        await self._authorize()
        owner, name = split_repo(repo)
        url = self._url("/repos/{owner}/{repo}/contents/{+path}{?ref}", owner=owner, repo=name, path=path, ref=ref)
        async with self._session.get(url, headers=self._headers(RAW)) as resp:
            if resp.status == 404:
                return None
            await self._raise_for_status(resp)
            return await resp.read()

    @with_retries
    async def tree(self, repo: str, tree_sha: str, *, recursive: bool = True) -> dict[str, Any]:
        """A tree (a commit sha names its commit's tree), with every entry below it when `recursive`.

        Listing first lets a session read only the files it selects. GitHub cuts a recursive listing at
        100,000 entries or 7 MB and says `truncated: true`; then list sub-trees one at a time.
        """
        await self._authorize()
        owner, name = split_repo(repo)
        return await self.gh.getitem(
            "/repos/{owner}/{repo}/git/trees/{tree_sha}{?recursive}",
            {"owner": owner, "repo": name, "tree_sha": tree_sha, "recursive": 1 if recursive else None},
        )

    @with_retries
    async def blob(self, repo: str, sha: str) -> bytes:
        """One blob's bytes; the raw media type spares the base64-in-JSON (a third larger) of the default."""
        await self._authorize()
        owner, name = split_repo(repo)
        url = self._url("/repos/{owner}/{repo}/git/blobs/{file_sha}", owner=owner, repo=name, file_sha=sha)
        async with self._session.get(url, headers=self._headers(RAW)) as resp:
            await self._raise_for_status(resp)
            return await resp.read()

    # -- one file across branches -----------------------------------------------------------------------
    @with_retries
    async def branch_files(
        self, repo: str, path: str, *, first: int = 100, after: str | None = None
    ) -> tuple[list[BranchFile], str | None]:
        """One page of the repository's branches (at most `first`, GitHub's limit being 100) with the file at
        `path` on each head; and the cursor of the next page, None on the last."""
        await self._authorize()
        owner, name = split_repo(repo)
        data = await self.gh.graphql(
            BRANCH_FILES_QUERY, endpoint=self._graphql_url, owner=owner, name=name, path=path, first=first,
            after=after,
        )
        refs = (data.get("repository") or {}).get("refs")
        if refs is None:
            raise BranchNotFound(f"no branches could be listed in {repo}")
        # A ref without a target has no commit, so no file: leaving it out loses nothing.
        page = [_branch_file(node) for node in refs["nodes"] if node and node.get("target")]
        more = refs["pageInfo"]
        return page, more["endCursor"] if more["hasNextPage"] else None

    # -- branches and commits ---------------------------------------------------------------------------
    @with_retries
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

    @with_retries
    async def path_commits(self, repo: str, branch: str | None, path: str, *, first: int = 100
                           ) -> list[tuple[str, str]]:
        """(oid, message) of the newest `first` (GitHub's limit: 100) commits on `branch` (default branch when
        None) that changed `path`, newest first; none when the branch is missing."""
        await self._authorize()
        owner, name = split_repo(repo)
        qualified = f"refs/heads/{branch}" if branch else "refs/heads/"
        data = await self.gh.graphql(
            PATH_COMMITS_QUERY, endpoint=self._graphql_url, owner=owner, name=name, qualifiedName=qualified,
            path=path, first=first,
        )
        repository = data.get("repository") or {}
        ref = repository.get("ref") if branch else repository.get("defaultBranchRef")
        history = ((ref or {}).get("target") or {}).get("history") or {}
        return [(str(n["oid"]), str(n.get("message") or "")) for n in history.get("nodes") or [] if n]

    async def commit_files(
        self, repo: str, branch: str, expected_head: str, files: Mapping[str, bytes], headline: str, body: str
    ) -> str:
        """All files in one commit on top of `expected_head` (compare-and-swap); the new commit's oid.

        GraphQL's createCommitOnBranch first (signed, shown as verified); when GraphQL cannot do it, the
        Git Data API with a non-forced ref update, which is the same compare-and-swap.
        """
        try:
            return await self._commit_graphql(repo, branch, expected_head, files, headline, body)
        except GraphQLException as exc:
            if _is_stale(exc):
                raise StaleHead(f"{repo}@{branch} moved past {expected_head[:12]}") from exc
            if is_rate_limited(exc):  # waited out as long as GitHub's rules allow: another API is no way round
                raise
            log.warning("createCommitOnBranch failed on %s (%s); committing through the Git Data API", repo, exc)
        return await self._commit_git_data(repo, branch, expected_head, files, f"{headline}\n\n{body}")

    @with_retries
    async def _commit_graphql(
        self, repo: str, branch: str, expected_head: str, files: Mapping[str, bytes], headline: str, body: str
    ) -> str:
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
        data = await self.gh.graphql(COMMIT_MUTATION, endpoint=self._graphql_url, input=payload)
        return str(data["createCommitOnBranch"]["commit"]["oid"])

    @with_retries
    async def _commit_git_data(
        self, repo: str, branch: str, expected_head: str, files: Mapping[str, bytes], message: str
    ) -> str:
        await self._authorize()
        owner, name = split_repo(repo)
        where = {"owner": owner, "repo": name}
        parent = await self.gh.getitem("/repos/{owner}/{repo}/git/commits/{sha}", {**where, "sha": expected_head})
        entries = []
        for path, content in sorted(files.items()):
            blob = await self.gh.post(
                "/repos/{owner}/{repo}/git/blobs", where,
                data={"content": base64.b64encode(content).decode(), "encoding": "base64"},
            )
            entries.append({"path": path, "mode": "100644", "type": "blob", "sha": blob["sha"]})
        tree = await self.gh.post(
            "/repos/{owner}/{repo}/git/trees", where, data={"base_tree": parent["tree"]["sha"], "tree": entries}
        )
        commit = await self.gh.post(
            "/repos/{owner}/{repo}/git/commits", where,
            data={"message": message, "tree": tree["sha"], "parents": [expected_head]},
        )
        # A non-forced update only asks for a fast-forward: had a force-push rewound the branch to an
        # ancestor of `expected_head`, it would publish again the commits that push removed. Compare first.
        ref = await self.gh.getitem("/repos/{owner}/{repo}/git/ref/{+ref}", {**where, "ref": f"heads/{branch}"})
        if ref["object"]["sha"] != expected_head:
            raise StaleHead(f"{repo}@{branch} moved past {expected_head[:12]}")
        try:
            await self.gh.patch(
                "/repos/{owner}/{repo}/git/refs/{+ref}", {**where, "ref": f"heads/{branch}"},
                data={"sha": commit["sha"], "force": False},
            )
        except BadRequest as exc:
            if exc.status_code != HTTPStatus.UNPROCESSABLE_ENTITY:
                raise
            if NOT_FAST_FORWARD in str(exc):
                raise StaleHead(f"{repo}@{branch} moved past {expected_head[:12]}") from exc
            raise CommitRefused(f"GitHub refused the commit to `{branch}`: {exc}. Nothing was committed and "
                                "the trained checkpoint is kept in the store; let the App push to this branch "
                                "(branch protection or rulesets), or set `branch:` in .github/retrain.yml to "
                                "one it may push to, and run the session again.") from exc
        return str(commit["sha"])

    # -- plumbing ---------------------------------------------------------------------------------------
    def _headers(self, accept: str) -> dict[str, str]:
        headers = sansio.create_headers(USER_AGENT, accept=accept, oauth_token=self.gh.oauth_token)
        return {**headers, "x-github-api-version": API_VERSION}

    @staticmethod
    async def _raise_for_status(resp: aiohttp.ClientResponse) -> None:
        """The same exceptions gidgethub raises, for the calls that bypass its JSON decoding."""
        if resp.status < 400:
            return
        text = (await resp.text(errors="replace"))[:300]
        error = GitHubBroken if resp.status >= 500 else BadRequest
        raise error(HTTPStatus(resp.status), f"{resp.method} {resp.url.path}: {text}", headers=resp.headers)


def _branch_file(node: Mapping[str, Any]) -> BranchFile:
    """A `refs` node of BRANCH_FILES_QUERY: a path that is a folder or a submodule is no file."""
    target = node["target"]
    blob = (target.get("file") or {}).get("object") or {}
    exists = "isTruncated" in blob  # only a Blob answers the fragment
    whole = exists and not blob["isTruncated"] and blob.get("text") is not None
    return BranchFile(branch=node["name"], oid=target["oid"], exists=exists, text=blob["text"] if whole else None,
                      size=int(blob.get("byteSize") or 0))


@asynccontextmanager
async def installation_client(
    settings: Settings, installation_id: int, *, repo: str | None = None,
    permissions: dict[str, str] | None = None, tokens: TokenCache | None = None,
    optional_permissions: dict[str, str] | None = None,
) -> AsyncIterator[GitHubClient]:
    """A client for one installation, its token narrowed to `repo` and `permissions` when given, and holding
    `optional_permissions` where the installation granted them."""
    settings.require_app()  # fail before opening anything when the App is not configured
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        app_gh = MeteredGitHubAPI(session, USER_AGENT, base_url=settings.github_api_url)
        token = InstallationToken(
            app_gh, settings, installation_id, repo=repo, permissions=permissions, cache=tokens or TokenCache(),
            optional=optional_permissions,
        )
        yield GitHubClient(session, settings, token)
