"""Small helpers for tests that drive the emulator: an App key pair, App JWTs, a sync HTTP call, and
where the shared GitHub fixtures are (so every suite finds them the same way)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from multidict import CIMultiDict


@dataclass(frozen=True)
class AppKey:
    """An RSA key pair standing in for a GitHub App's private key."""

    private_pem: bytes
    public_pem: bytes

    @classmethod
    def generate(cls) -> AppKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        return cls(private, public)


def app_jwt(key: AppKey, iss: Any, *, iat: int = -60, exp: int = 540) -> str:
    """An App JWT with times relative to now; signed with PyJWS so `iss` may be an int, as some
    clients send it (PyJWT's encoder only allows strings)."""
    now = int(time.time())
    claims = json.dumps({"iat": now + iat, "exp": now + exp, "iss": iss}).encode()
    return jwt.PyJWS().encode(claims, key.private_pem, algorithm="RS256")


@dataclass
class Reply:
    """Status, headers (case-insensitive, as HTTP's are) and raw body of one response."""

    status: int
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


API_VERSION = "2022-11-28"


def http(method: str, url: str, *, auth: str | None = None, body: Any = None,
         accept: str = "application/vnd.github+json", api_version: str | None = API_VERSION) -> Reply:
    """One request from sync code, redirects not followed (tests look at the 302 itself); it names the REST
    API version as a well-behaved client does (`api_version=None`: no X-GitHub-Api-Version header)."""
    headers = {"Accept": accept, **({"Authorization": auth} if auth else {}),
               **({"X-GitHub-Api-Version": api_version} if api_version else {})}

    async def go() -> Reply:
        async with aiohttp.ClientSession() as session, session.request(
                method, url, json=body, headers=headers, allow_redirects=False) as r:
            return Reply(r.status, CIMultiDict(r.headers), await r.read())

    return asyncio.run(go())


def github_fixtures() -> tuple[Path, Path] | None:
    """(OpenAPI description, GraphQL schema) from $RETRAIN_FIXTURES, or None when they are not there."""
    root = os.environ.get("RETRAIN_FIXTURES")
    if not root:
        return None
    openapi = Path(root) / "github/openapi/api.github.com.json"
    schema = Path(root) / "github/graphql/schema.graphql"
    return (openapi, schema) if openapi.is_file() and schema.is_file() else None
