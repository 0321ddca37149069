"""The shared test harness of the emulator's own tests: one emulator per test module with three repositories
of installation 42 (and one of another installation), an App key pair, JWTs, and response-schema checks.

Test modules import `env` (a module-scoped pytest fixture) from here. Response shapes are validated
against GitHub's OpenAPI description, and GraphQL documents against its schema, when RETRAIN_FIXTURES
points at the shared fixtures; otherwise those checks are reported as not run (a fresh clone has none).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from .client import AppKey, Reply, github_fixtures, http
from .client import app_jwt as _app_jwt
from .emulator import GitHubEmulator

APP_ID = "12345"
INSTALLATION = 42
FIXTURES = github_fixtures()
OPENAPI, SCHEMA = FIXTURES or (None, None)
REAL = FIXTURES is not None
NOT_RUN = ("EMULATOR CONFORMANCE: GitHub schema not found (RETRAIN_FIXTURES unset or missing) — "
           "GraphQL/OpenAPI validation NOT exercised")
KEY, OTHER_KEY = AppKey.generate(), AppKey.generate()
_announced: list[str] = []
FILES = {"README.md": b"# demo\n", "data/a.md": b"alpha\n", "data/b.md": b"beta\n"}


def app_jwt(*, key: AppKey = KEY, iss: Any = APP_ID, iat: int = -60, exp: int = 540) -> str:
    return _app_jwt(key, iss, iat=iat, exp=exp)


@dataclass
class Env:
    emu: GitHubEmulator
    base: str
    token: str

    def call(self, method: str, path: str, body: Any = None, *, auth: str | None = "", **kw: Any) -> Reply:
        return http(method, self.base + path, auth=f"token {self.token}" if auth == "" else auth, body=body, **kw)

    def app_call(self, method: str, path: str, body: Any = None) -> Reply:
        """A call authenticated as the App itself (JWT)."""
        return self.call(method, path, body, auth=f"Bearer {app_jwt()}")

    def gql(self, query: str, token: str | None = None, **variables: Any) -> dict[str, Any]:
        reply = http("POST", self.base + "/graphql", auth=f"bearer {token or self.token}",
                     body={"query": query, "variables": variables})
        assert reply.status == 200
        return reply.json()

    def conforms(self, method: str, path: str, reply: Reply) -> None:
        """The reply matches GitHub's documented response schema (only with the real description)."""
        if self.emu.spec.source == "embedded":
            return
        op = self.emu.spec.match(method, path.split("?")[0])
        assert op is not None
        assert self.emu.spec.response_errors(op, reply.status, reply.json()) == []

    def take_violations(self, since: int) -> list[str]:
        """The violations recorded since `since`, removed (they were expected)."""
        found = self.emu.violations[since:]
        del self.emu.violations[since:]
        return found


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Env]:
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
    note = f"EMULATOR CONFORMANCE: validating against {OPENAPI} and {SCHEMA}" if REAL else NOT_RUN
    if reporter is not None and capture is not None and not _announced:
        with capture.global_and_fixture_disabled():  # say it on the terminal, past output capture
            reporter.write_line("\n" + note, yellow=not REAL, bold=True)
        _announced.append(note)  # once a session is enough
    if not REAL:
        warnings.warn(NOT_RUN, stacklevel=1)
    emu = GitHubEmulator(app_id=APP_ID, app_public_key_pem=KEY.public_pem, root=tmp_path_factory.mktemp("gh"),
                         openapi_path=OPENAPI, graphql_schema_path=SCHEMA)
    for name in ("octo/demo", "octo/commits", "octo/other"):
        emu.add_repository(name, FILES, installation_id=INSTALLATION)
    emu.add_repository("elsewhere/private", {"x": b"y"}, installation_id=7)
    with emu.running_in_thread() as base:
        reply = http("POST", f"{base}/app/installations/{INSTALLATION}/access_tokens", auth=f"Bearer {app_jwt()}")
        assert reply.status == 201, reply.body
        yield Env(emu, base, reply.json()["token"])
