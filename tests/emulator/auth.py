"""GitHub App authentication as GitHub enforces it: RS256 App JWTs and installation tokens.

A client that gets auth subtly wrong (a long-lived JWT, a token used after it expired, a token narrowed
to one repository used on another) must fail here exactly as it would against api.github.com.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import string
import time
from dataclasses import dataclass, field

import jwt

JWT_MAX_LIFETIME_S = 600  # "exp ... must be no more than 10 minutes into the future"
JWT_IAT_SKEW_S = 60
TOKEN_LIFETIME_S = 3600
LEVELS = {"read": 1, "write": 2, "admin": 3}
DEFAULT_INSTALLATION_PERMISSIONS = {
    "metadata": "read", "contents": "write", "issues": "write", "pull_requests": "write",
    "checks": "write", "statuses": "write",
}
_ALPHABET = string.ascii_letters + string.digits


class AuthError(Exception):
    """Authentication failed; `message` is GitHub's wording for the 401 body."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def verify_app_jwt(token: str, *, public_key_pem: bytes, app_id: str, now: float | None = None) -> None:
    """Check an App JWT the way GitHub does; raise AuthError with GitHub's message otherwise.

    GitHub's documented rules: RS256 signed with the App's key, `iss` is the App (int or str), `iat` not
    in the future (60 s drift tolerated), `exp` in the future and at most 10 minutes away from now. The
    10-minute rule is on `exp - now` (GitHub's own examples backdate `iat` by 60 s and still set
    `exp = now + 600`); `exp` must also come after `iat`.
    """
    now = time.time() if now is None else now
    try:
        claims = jwt.decode(token, public_key_pem, algorithms=["RS256"],
                            options={"verify_exp": False, "verify_iat": False, "verify_aud": False,
                                     "require": ["iat", "exp", "iss"]})
    except jwt.PyJWTError as exc:
        raise AuthError("A JSON web token could not be decoded") from exc
    iat, exp = claims["iat"], claims["exp"]
    if not isinstance(iat, int | float) or iat > now + JWT_IAT_SKEW_S:
        raise AuthError("'Issued at' claim ('iat') must be an Integer representing the time that the "
                        "assertion was issued")
    if not isinstance(exp, int | float) or exp <= now or exp <= iat:
        raise AuthError("'Expiration time' claim ('exp') must be a numeric value representing the future "
                        "time at which the assertion expires")
    if exp - now > JWT_MAX_LIFETIME_S:
        raise AuthError("'Expiration time' claim ('exp') is too far in the future")
    if str(claims["iss"]) != str(app_id):
        raise AuthError("A JSON web token could not be decoded")


@dataclass
class Installation:
    """An App installation: the repositories it was granted and the permissions it holds."""

    id: int
    account: str
    repositories: set[str] = field(default_factory=set)  # full names
    permissions: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_INSTALLATION_PERMISSIONS))


@dataclass(frozen=True)
class InstallationToken:
    """A minted `ghs_` token, possibly narrowed to some repositories and permissions."""

    token: str
    installation_id: int
    expires_at: float
    repositories: frozenset[str] | None  # full names it was narrowed to; None: all of the installation's
    permissions: dict[str, str]

    def allows(self, permission: str, level: str) -> bool:
        """Whether the token holds `permission` at `level` or higher."""
        return LEVELS.get(self.permissions.get(permission, ""), 0) >= LEVELS[level]

    @property
    def expires_at_iso(self) -> str:
        return dt.datetime.fromtimestamp(self.expires_at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenStore:
    """Mints and looks up installation tokens."""

    def __init__(self) -> None:
        self._tokens: dict[str, InstallationToken] = {}

    def mint(self, inst: Installation, *, repositories: set[str] | None = None,
             permissions: dict[str, str] | None = None, lifetime_s: float = TOKEN_LIFETIME_S
             ) -> InstallationToken:
        """A new token for `inst`, narrowed when asked; callers check the narrowing is allowed."""
        token = InstallationToken(
            token="ghs_" + "".join(secrets.choice(_ALPHABET) for _ in range(36)),
            installation_id=inst.id,
            expires_at=time.time() + lifetime_s,
            repositories=None if repositories is None else frozenset(repositories),
            permissions=dict(inst.permissions if permissions is None else permissions),
        )
        self._tokens[token.token] = token
        return token

    def lookup(self, token: str) -> InstallationToken:
        """The live token for this string, or AuthError("Bad credentials")."""
        found = self._tokens.get(token)
        if found is None or found.expires_at <= time.time():
            raise AuthError("Bad credentials")
        return found

    def expire_all(self) -> None:
        """Make every minted token expired, for tests of the App's token refresh."""
        for key, tok in list(self._tokens.items()):
            self._tokens[key] = dataclasses.replace(tok, expires_at=0.0)


def bearer(header: str | None) -> str | None:
    """The credential in `Authorization: token X` or `Bearer X` (both are accepted by GitHub)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() not in {"token", "bearer"} or not value.strip():
        return None
    return value.strip()
