"""Pull requests: `GET /repos/{owner}/{repo}/pulls/{pull_number}` and the state behind it.

As on GitHub, a pull request shares its number with the issue sequence; its head is a branch of the same
repository or of a fork. A fork's head commits are readable in the base repository (GitHub keeps them
under `refs/pull/N/head`, and `ref=<sha>` reads them), which is where the emulator writes them; the
fork itself is not a repository the App's installation can see. Reading a pull request takes the
`pull_requests` permission (read); the issues permission does not cover it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from .openapi import Operation
from .rest import Handler, installation_token, not_found, visible_repo
from .state import HTML, PullState, RepoState, node_id, now_iso, user_json

if TYPE_CHECKING:
    from .emulator import GitHubEmulator


def head_sha(repo: RepoState, pull: PullState) -> str:
    """A same-repository pull request's head follows its branch; a fork's is its refs/pull/N/head."""
    oid = repo.git.resolve(pull.pull_ref if pull.fork_owner else f"refs/heads/{pull.head_ref}")
    if oid is None:
        raise KeyError(f"pull request {pull.number} of {repo.full_name} has no head")
    return oid


def repository_json(api: str, full_name: str, *, private: bool, default_branch: str, repo_id: int,
                    fork: bool) -> dict[str, Any]:
    """A `repository` object with every field the schema requires."""
    owner, name = full_name.split("/", 1)
    u = f"{api}/repos/{full_name}"
    templated = {k: f"{u}/{path}" for k, path in {
        "archive_url": "{archive_format}{/ref}", "assignees_url": "assignees{/user}", "blobs_url": "git/blobs{/sha}",
        "branches_url": "branches{/branch}", "collaborators_url": "collaborators{/collaborator}",
        "comments_url": "comments{/number}", "commits_url": "commits{/sha}", "compare_url": "compare/{base}...{head}",
        "contents_url": "contents/{+path}", "contributors_url": "contributors", "deployments_url": "deployments",
        "downloads_url": "downloads", "events_url": "events", "forks_url": "forks",
        "git_commits_url": "git/commits{/sha}", "git_refs_url": "git/refs{/sha}", "git_tags_url": "git/tags{/sha}",
        "hooks_url": "hooks", "issue_comment_url": "issues/comments{/number}",
        "issue_events_url": "issues/events{/number}",
        "issues_url": "issues{/number}", "keys_url": "keys{/key_id}", "labels_url": "labels{/name}",
        "languages_url": "languages", "merges_url": "merges", "milestones_url": "milestones{/number}",
        "notifications_url": "notifications{?since,all,participating}", "pulls_url": "pulls{/number}",
        "releases_url": "releases{/id}", "stargazers_url": "stargazers", "statuses_url": "statuses/{sha}",
        "subscribers_url": "subscribers", "subscription_url": "subscription", "tags_url": "tags",
        "teams_url": "teams", "trees_url": "git/trees{/sha}",
    }.items()}
    stamp = now_iso()
    return {
        **templated, "id": repo_id, "node_id": node_id("R", full_name), "name": name, "full_name": full_name,
        "owner": user_json(api, owner), "private": private, "html_url": f"{HTML}/{full_name}", "description": None,
        "fork": fork, "url": u, "clone_url": f"{HTML}/{full_name}.git", "git_url": f"git://github.com/{full_name}.git",
        "ssh_url": f"git@github.com:{full_name}.git", "svn_url": f"{HTML}/{full_name}", "mirror_url": None,
        "homepage": None, "language": None, "forks": 0, "forks_count": 0, "stargazers_count": 0, "watchers": 0,
        "watchers_count": 0, "size": 0, "default_branch": default_branch, "open_issues": 0, "open_issues_count": 0,
        "has_issues": True, "has_projects": True, "has_wiki": True, "has_pages": False, "has_downloads": True,
        "archived": False, "disabled": False, "license": None, "pushed_at": stamp, "created_at": stamp,
        "updated_at": stamp,
    }


def pull_json(emu: GitHubEmulator, repo: RepoState, pull: PullState) -> dict[str, Any]:
    """A `pull-request` object."""
    api, n = emu.base_url, pull.number
    u = f"{api}/repos/{repo.full_name}/pulls/{n}"
    head_repo = f"{pull.fork_owner}/{repo.full_name.split('/', 1)[1]}" if pull.fork_owner else repo.full_name
    head_owner = pull.fork_owner or repo.owner

    def side(ref: str, sha: str, full_name: str, owner: str, fork: bool, repo_id: int) -> dict[str, Any]:
        return {"label": f"{owner}:{ref}", "ref": ref, "sha": sha, "user": user_json(api, owner),
                "repo": repository_json(api, full_name, private=repo.private, default_branch=repo.default_branch,
                                        repo_id=repo_id, fork=fork)}

    base_sha = repo.git.branch_head(pull.base_ref) or ""
    html = f"{HTML}/{repo.full_name}/pull/{n}"
    return {
        "url": u, "id": 10_000 + n, "node_id": node_id("PR", f"{repo.full_name}#{n}"), "html_url": html,
        "diff_url": f"{html}.diff", "patch_url": f"{html}.patch",
        "issue_url": f"{api}/repos/{repo.full_name}/issues/{n}", "commits_url": f"{u}/commits",
        "review_comments_url": f"{u}/comments",
        "review_comment_url": f"{api}/repos/{repo.full_name}/pulls/comments{{/number}}",
        "comments_url": f"{api}/repos/{repo.full_name}/issues/{n}/comments",
        "statuses_url": f"{api}/repos/{repo.full_name}/statuses/{head_sha(repo, pull)}",
        "number": n, "state": pull.state, "locked": False, "title": pull.title, "user": user_json(api, pull.author),
        "body": None, "labels": [], "milestone": None, "created_at": pull.created_at, "updated_at": pull.created_at,
        "closed_at": None, "merged_at": None, "merge_commit_sha": None, "assignee": None,
        "head": side(pull.head_ref, head_sha(repo, pull), head_repo, head_owner, pull.fork_owner is not None,
                     repo.id + 1 if pull.fork_owner else repo.id),
        "base": side(pull.base_ref, base_sha, repo.full_name, repo.owner, False, repo.id),
        "_links": {k: {"href": v} for k, v in {
            "self": u, "html": html, "issue": f"{api}/repos/{repo.full_name}/issues/{n}",
            "comments": f"{api}/repos/{repo.full_name}/issues/{n}/comments", "review_comments": f"{u}/comments",
            "review_comment": f"{api}/repos/{repo.full_name}/pulls/comments{{/number}}", "commits": f"{u}/commits",
            "statuses": f"{api}/repos/{repo.full_name}/statuses/{head_sha(repo, pull)}"}.items()},
        "author_association": "CONTRIBUTOR" if pull.fork_owner else "MEMBER", "auto_merge": None,
        "merged": pull.merged, "mergeable": True, "mergeable_state": "clean", "merged_by": None, "comments": 0,
        "review_comments": 0, "maintainer_can_modify": False, "commits": 1, "additions": 1, "deletions": 0,
        "changed_files": 1,
    }


async def get_pull(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    repo = visible_repo(emu, installation_token(request, emu), op, ("pull_requests",), "read")
    raw = op.params["pull_number"]
    pull = repo.pulls.get(int(raw)) if raw.isdigit() else None
    if pull is None:
        raise not_found()
    return web.json_response(pull_json(emu, repo, pull))


HANDLERS: dict[tuple[str, str], Handler] = {
    ("GET", "/repos/{owner}/{repo}/pulls/{pull_number}"): get_pull,
}
