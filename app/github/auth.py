"""Installation tokens: minted from the App JWT (gidgethub backdates `iat` 60 s for clock drift), narrowed
to one repository and the permissions a task needs, and cached until a few minutes before they expire.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

from gidgethub import BadRequest
from gidgethub.abc import GitHubAPI
from gidgethub.apps import get_jwt

from app.config.settings import Settings
from app.github.retry import with_retries

# What each kind of task may do; nothing more is asked for (the App's manifest grants at least this).
EVENTS_PERMISSIONS = {"contents": "read", "issues": "write", "checks": "write", "metadata": "read"}
SESSION_PERMISSIONS = {"contents": "write", "issues": "write", "checks": "write", "metadata": "read"}
# Added to a task's token only for work on a pull request (reading its head and base), so an installation
# that has not yet accepted the permission keeps working everywhere else.
PULL_PERMISSIONS = {"pull_requests": "read"}
REFRESH_MARGIN = timedelta(minutes=5)

TokenKey = tuple[int, str | None, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: datetime

    def fresh(self, now: datetime) -> bool:
        return now < self.expires_at - REFRESH_MARGIN


class TokenCache:
    """Tokens by (installation, repository, permissions), for one worker process."""

    def __init__(self) -> None:
        self._tokens: dict[TokenKey, Token] = {}

    def get(self, key: TokenKey, now: datetime) -> Token | None:
        token = self._tokens.get(key)
        return token if token is not None and token.fresh(now) else None

    def put(self, key: TokenKey, token: Token) -> None:
        self._tokens[key] = token


class InstallationToken:
    """A token provider for one client: asks the cache, mints when there is no fresh token."""

    def __init__(
        self, app_gh: GitHubAPI, settings: Settings, installation_id: int, *, repo: str | None,
        permissions: dict[str, str] | None, cache: TokenCache, optional: dict[str, str] | None = None,
    ) -> None:
        """`optional`: asked for too, and done without when the installation has not granted them (an owner
        accepts a permission an App adds later in the installation's settings; until then GitHub refuses a
        token that names it with 422)."""
        self._app_gh = app_gh
        self._settings = settings
        self._installation_id = installation_id
        self._repo = repo
        self._permissions = permissions
        self._optional = optional or {}
        self._cache = cache
        wanted = {**(permissions or {}), **self._optional}
        self._key: TokenKey = (installation_id, repo, tuple(sorted(wanted.items())))

    async def get(self) -> str:
        now = datetime.now(UTC)
        cached = self._cache.get(self._key, now)
        if cached is not None:
            return cached.value
        if not self._optional:
            token = await self._mint(self._permissions)
        else:
            try:
                token = await self._mint({**(self._permissions or {}), **self._optional})
            except BadRequest as exc:
                if exc.status_code != HTTPStatus.UNPROCESSABLE_ENTITY:
                    raise
                token = await self._mint(self._permissions)
        self._cache.put(self._key, token)
        return token.value

    @with_retries
    async def _mint(self, permissions: dict[str, str] | None) -> Token:
        app_id, private_key = self._settings.require_app()
        body: dict[str, Any] = {}
        if self._repo is not None:
            body["repositories"] = [self._repo.split("/", 1)[1]]
        if permissions:
            body["permissions"] = permissions
        minted = await self._app_gh.post(
            "/app/installations/{installation_id}/access_tokens",
            {"installation_id": self._installation_id},
            data=body or b"",
            jwt=get_jwt(app_id=app_id, private_key=private_key),
        )
        expires = datetime.fromisoformat(str(minted["expires_at"]).replace("Z", "+00:00"))
        return Token(str(minted["token"]), expires)
