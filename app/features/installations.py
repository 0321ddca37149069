"""Which repositories' cron entries to (re)build or drop: `installation`, `installation_repositories`, and
`push` events to the default branch that touch the config. Pure: the events task reads the configs.

GitHub sends no webhook for a schedule, so Retrain keeps its own (celery-redbeat entries in Redis); these
events are the moments when a repository's schedule may have changed.
"""

from __future__ import annotations

from typing import Any

from app.config.repo_config import CONFIG_PATH
from app.features.decisions import Decision, Ignore, RemoveSchedules, SyncSchedules

# GitHub lists at most this many commits in a push payload, and at most this many files per commit;
# a list that reaches a cap may be cut short, so the config may have changed unseen.
PUSH_COMMIT_CAP = 2048
COMMIT_FILES_CAP = 3000
NULL_SHA = "0" * 40


def _full_names(repos: Any) -> tuple[str, ...]:
    return tuple(sorted({str(r["full_name"]) for r in repos or () if isinstance(r, dict) and r.get("full_name")}))


def _installation_id(payload: dict[str, Any]) -> int | None:
    try:
        return int(payload["installation"]["id"])
    except (KeyError, TypeError, ValueError):
        return None


def plan_installation(delivery_id: str, payload: dict[str, Any]) -> Decision:
    """Installed (or new permissions accepted): build every listed repository's entries; uninstalled: drop
    all of the installation's. Suspension changes nothing: entries fire and fail to get a token until the
    installation is unsuspended, when they simply work again."""
    installation_id = _installation_id(payload)
    if installation_id is None:
        return Ignore("payload lacks the installation")
    action = payload.get("action")
    repos = _full_names(payload.get("repositories"))
    if action in ("created", "new_permissions_accepted"):
        return SyncSchedules(installation_id, repos) if repos else Ignore("no repositories listed")
    if action == "deleted":
        return RemoveSchedules(installation_id, repos, whole_installation=True)
    return Ignore(f"installation {action} does not change schedules")


def plan_installation_repositories(delivery_id: str, payload: dict[str, Any]) -> Decision:
    installation_id = _installation_id(payload)
    if installation_id is None:
        return Ignore("payload lacks the installation")
    action = payload.get("action")
    if action == "added":
        repos = _full_names(payload.get("repositories_added"))
        return SyncSchedules(installation_id, repos) if repos else Ignore("no repositories added")
    if action == "removed":
        repos = _full_names(payload.get("repositories_removed"))
        return RemoveSchedules(installation_id, repos) if repos else Ignore("no repositories removed")
    return Ignore(f"installation_repositories {action} does not change schedules")


def push_touches_config(payload: dict[str, Any]) -> bool:
    """True when the push may have changed the config: a listed commit touched it, or the lists cannot
    tell (capped, force-pushed, branch created). Re-reading the config then costs one API call, as
    comparing `before...after` would, and re-building entries from it is idempotent."""
    commits = payload.get("commits")
    if payload.get("forced") or payload.get("before") in (None, NULL_SHA) or not isinstance(commits, list):
        return True
    if len(commits) >= PUSH_COMMIT_CAP:
        return True
    for commit in commits:
        files = [path for key in ("added", "modified", "removed") for path in commit.get(key) or ()]
        if CONFIG_PATH in files or len(files) >= COMMIT_FILES_CAP:
            return True
    return False


def plan_push(delivery_id: str, payload: dict[str, Any]) -> Decision:
    repository = payload.get("repository") or {}
    installation_id = _installation_id(payload)
    if installation_id is None or not repository.get("full_name"):
        return Ignore("payload lacks the repository or installation")
    default = repository.get("default_branch")
    if not default or payload.get("ref") != f"refs/heads/{default}":
        return Ignore("push to a branch other than the default one")
    if payload.get("deleted"):
        return Ignore("the default branch was deleted")
    if not push_touches_config(payload):
        return Ignore(f"push does not touch {CONFIG_PATH}")
    return SyncSchedules(installation_id, (str(repository["full_name"]),))
