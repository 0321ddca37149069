"""Webhook payloads for tests: GitHub's real example (from RETRAIN_FIXTURES) with our values set, or,
on a clone without the shared fixtures, a small payload of the same shape written here.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from tests.conftest import fixtures_dir

if TYPE_CHECKING:
    from tests.emulator import GitHubEmulator


def _user(login: str, kind: str = "User") -> dict[str, Any]:
    return {"login": login, "id": abs(hash(login)) % 10**8, "type": kind, "site_admin": False}


OWN_TEMPLATE: dict[str, Any] = {
    "action": "created",
    "issue": {"number": 1, "title": "Train please", "state": "open", "user": _user("octocat"), "comments": 0},
    "comment": {"id": 1, "body": "", "user": _user("octocat"), "author_association": "OWNER"},
    "repository": {"id": 1, "name": "demo", "full_name": "octo/demo", "private": False, "default_branch": "main",
                   "owner": _user("octo", "Organization")},
    "sender": _user("octocat"),
    "installation": {"id": 1, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="},
}


@cache
def _template() -> str:
    root = fixtures_dir()
    if root is not None:
        return (root / "github/webhook-examples/issue_comment/created.with-installation.payload.json").read_text()
    return json.dumps(OWN_TEMPLATE)


def comment_event(
    body: str, *, sender: str = "alice", repo: str = "octo/demo", installation_id: int = 42,
    issue_number: int = 7, comment_id: int = 1001, action: str = "created", sender_type: str = "User",
    github: GitHubEmulator | None = None, pull_request: bool = False,
) -> dict[str, Any]:
    """An `issue_comment` payload. With `github`, the emulator is told the comment was made (its issue and the
    comment exist there, as they do on GitHub for any real delivery), so the App can reply and react."""
    payload = copy.deepcopy(json.loads(_template()))
    owner, name = repo.split("/")
    payload["action"] = action
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # GitHub's format; the events job ignores stale ones
    payload["comment"].update(id=comment_id, body=body, created_at=now, updated_at=now)
    payload["comment"]["user"].update(login=sender, type=sender_type)
    payload["sender"].update(login=sender, type=sender_type)
    payload["issue"]["number"] = issue_number
    if pull_request:  # a comment in a pull request's conversation: GitHub marks its issue so
        api = f"https://api.github.com/repos/{repo}/pulls/{issue_number}"
        payload["issue"]["pull_request"] = {"url": api, "html_url": f"https://github.com/{repo}/pull/{issue_number}",
                                            "diff_url": f"https://github.com/{repo}/pull/{issue_number}.diff",
                                            "patch_url": f"https://github.com/{repo}/pull/{issue_number}.patch"}
    else:
        payload["issue"].pop("pull_request", None)
    payload["repository"].update(name=name, full_name=repo)
    payload["repository"]["owner"]["login"] = owner
    payload["installation"]["id"] = installation_id
    return github.event_happened("issue_comment", payload) if github is not None else payload
