"""Per-repository state and the JSON shapes GitHub answers with.

The shapes follow GitHub's OpenAPI schemas (required fields included), so a client that parses a real
response parses ours; test_emulator.py validates them against the real description.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import zlib
from dataclasses import dataclass, field
from typing import Any

from .gitstore import GitRepo, Identity, TreeEntry

HTML = "https://github.com"
ROLES = ("admin", "maintain", "write", "triage", "read", "none")
# GitHub's `permission` field predates fine roles: maintain reads as write, triage as read.
LEGACY_PERMISSION = {"admin": "admin", "maintain": "write", "write": "write", "triage": "read",
                     "read": "read", "none": "none"}
GITHUB_COMMITTER = Identity("GitHub", "noreply@github.com")  # what GitHub records (and signs) for API commits
_ids = itertools.count(1_000_001)


def next_id() -> int:
    """A process-wide unique id for comments, reactions and users."""
    return next(_ids)


def node_id(kind: str, key: str) -> str:
    """A stable opaque global node id, in the style of GitHub's `R_...` ids."""
    return f"{kind}_" + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PullState:
    """A pull request (tests/emulator/pulls.py answers for it)."""

    number: int
    title: str
    author: str
    head_ref: str  # the head branch's name, in the head repository
    base_ref: str
    fork_owner: str | None = None  # None: the head branch is in this repository
    state: str = "open"
    merged: bool = False
    created_at: str = ""

    @property
    def pull_ref(self) -> str:
        return f"refs/pull/{self.number}/head"


@dataclass
class RepoState:
    """One emulated repository: its git directory plus what the API has written to it."""

    full_name: str
    git: GitRepo
    installation_id: int
    default_branch: str
    private: bool = True  # a public repository lets every user read it
    id: int = field(default_factory=next_id)
    roles: dict[str, str] = field(default_factory=dict)  # login -> one of ROLES
    # Issues and pull requests that exist (they share one sequence of numbers) -> "issue" or "pull_request"
    issues: dict[int, str] = field(default_factory=dict)
    pulls: dict[int, PullState] = field(default_factory=dict)  # the pull requests among them
    comment_issues: dict[int, int] = field(default_factory=dict)  # every comment that exists -> its issue number
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # issue -> the App's comment objects
    reactions: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # comment id -> reactions
    check_runs: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> check-run object, in creation order
    check_history: dict[int, list[Any]] = field(default_factory=dict)  # id -> accepted create/update bodies
    check_suites: dict[str, int] = field(default_factory=dict)  # head sha -> the App's check suite id
    releases: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> release object (without assets)
    assets: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> release-asset object, in upload order
    asset_release: dict[int, int] = field(default_factory=dict)  # asset id -> its release's id
    # The repository's "immutable releases" setting: a published release's assets can no longer change.
    immutable_releases: bool = False

    @property
    def owner(self) -> str:
        return self.full_name.split("/", 1)[0]


def user_json(api: str, login: str, *, user_type: str = "User", user_id: int | None = None) -> dict[str, Any]:
    """A `simple-user` object."""
    uid = user_id if user_id is not None else zlib.crc32(login.encode()) % 10_000_000 + 1
    u = f"{api}/users/{login}"
    return {
        "login": login, "id": uid, "node_id": node_id("U", login),
        "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4", "gravatar_id": "",
        "url": u, "html_url": f"{HTML}/{login}", "followers_url": f"{u}/followers",
        "following_url": f"{u}/following{{/other_user}}", "gists_url": f"{u}/gists{{/gist_id}}",
        "starred_url": f"{u}/starred{{/owner}}{{/repo}}", "subscriptions_url": f"{u}/subscriptions",
        "organizations_url": f"{u}/orgs", "repos_url": f"{u}/repos", "events_url": f"{u}/events{{/privacy}}",
        "received_events_url": f"{u}/received_events", "type": user_type, "site_admin": False,
    }


def permission_json(api: str, login: str, role: str) -> dict[str, Any]:
    """The `repository-collaborator-permission` object."""
    legacy = LEGACY_PERMISSION[role]
    rank = ROLES.index(role)
    flags = {"admin": rank <= 0, "maintain": rank <= 1, "push": rank <= 2, "triage": rank <= 3, "pull": rank <= 4}
    user = {**user_json(api, login), "permissions": flags, "role_name": role}
    return {"permission": legacy, "role_name": role, "user": user}


def comment_json(api: str, repo: RepoState, issue: int, body: str, bot: dict[str, Any]) -> dict[str, Any]:
    """An `issue-comment` object written by the App's bot user."""
    cid, stamp = next_id(), now_iso()
    return {
        "id": cid, "node_id": node_id("IC", str(cid)), "url": f"{api}/repos/{repo.full_name}/issues/comments/{cid}",
        "html_url": f"{HTML}/{repo.full_name}/issues/{issue}#issuecomment-{cid}", "body": body, "user": bot,
        "created_at": stamp, "updated_at": stamp, "issue_url": f"{api}/repos/{repo.full_name}/issues/{issue}",
        "author_association": "NONE", "performed_via_github_app": None,
    }


def reaction_json(content: str, bot: dict[str, Any]) -> dict[str, Any]:
    """A `reaction` object."""
    rid = next_id()
    return {"id": rid, "node_id": node_id("REA", str(rid)), "user": bot, "content": content,
            "created_at": now_iso()}


def _wrap60(data: bytes) -> str:
    """Base64 with a newline every 60 characters, as the contents API sends it."""
    text = base64.b64encode(data).decode()
    return "".join(text[i : i + 60] + "\n" for i in range(0, len(text), 60))


def content_entry(api: str, repo: RepoState, ref: str, e: TreeEntry) -> dict[str, Any]:
    """A directory listing item (also the base of a file object)."""
    kind = {"tree": "dir", "commit": "submodule"}.get(e.kind, "symlink" if e.mode == "120000" else "file")
    self_url = f"{api}/repos/{repo.full_name}/contents/{e.path}?ref={ref}"
    git_kind = "trees" if e.kind == "tree" else "blobs"
    git_url = f"{api}/repos/{repo.full_name}/git/{git_kind}/{e.oid}"
    html = f"{HTML}/{repo.full_name}/{'tree' if e.kind == 'tree' else 'blob'}/{ref}/{e.path}"
    raw = f"https://raw.githubusercontent.com/{repo.full_name}/{ref}/{e.path}" if kind == "file" else None
    return {"type": kind, "size": e.size, "name": e.path.rsplit("/", 1)[-1], "path": e.path, "sha": e.oid,
            "url": self_url, "git_url": git_url, "html_url": html, "download_url": raw,
            "_links": {"self": self_url, "git": git_url, "html": html}}


def file_json(api: str, repo: RepoState, ref: str, e: TreeEntry, data: bytes) -> dict[str, Any]:
    """A `content-file` object; files over 1 MB come back with encoding "none" and no content."""
    big = len(data) > 1024 * 1024
    return {**content_entry(api, repo, ref, e), "content": "" if big else _wrap60(data),
            "encoding": "none" if big else "base64"}
