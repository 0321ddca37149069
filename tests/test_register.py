"""`retrain register`: the App manifest, and GitHub's manifest flow over real HTTP against the emulator.

The emulator plays github.com too: its /settings/apps/new takes the posted form, registers the App and
redirects to the callback with a one-time code, as GitHub does once the person confirms. The credentials
`register` writes must then authenticate as the new App.
"""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import threading
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from gidgethub.aiohttp import GitHubAPI
from gidgethub.apps import get_jwt

from app import cli
from app.config.settings import Settings
from app.features import PLANNERS
from app.github.auth import EVENTS_PERMISSIONS, PULL_PERMISSIONS, SESSION_PERMISSIONS
from app.register import (
    MANIFEST_PATH,
    AppCredentials,
    Registration,
    RegistrationError,
    exchange_code,
    load_manifest,
    new_app_url,
    write_env,
)
from tests.conftest import fixtures_dir
from tests.emulator import GitHubEmulator
from tests.emulator.apps import ALWAYS_DELIVERED, EVENT_PERMISSION, validate_manifest
from tests.emulator.client import http

WEBHOOK = "https://retrain.example.com/webhook"
LEVEL = {"read": 1, "write": 2, "admin": 3}


# --- the manifest file ----------------------------------------------------------------------------------------
def _union(*grants: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for grant in grants:
        for name, level in grant.items():
            if LEVEL[level] > LEVEL.get(out.get(name, ""), 0):
                out[name] = level
    return out


def test_manifest_asks_for_exactly_what_retrain_uses() -> None:
    manifest = load_manifest(MANIFEST_PATH)
    # Tokens are narrowed to these per task; workflow_run events need actions: read; metadata is always granted.
    expected = _union(EVENTS_PERMISSIONS, SESSION_PERMISSIONS, PULL_PERMISSIONS,
                      {"metadata": "read", "actions": "read"})
    assert manifest["default_permissions"] == expected
    # Reading a pull request's head and base; its comments are answered through the issues API (issues: write).
    assert manifest["default_permissions"]["pull_requests"] == "read"
    # Every handled event, except those GitHub delivers to every App and refuses as subscriptions.
    assert set(manifest["default_events"]) == set(PLANNERS) - {"installation", "installation_repositories"}
    assert len(manifest["default_events"]) == len(set(manifest["default_events"]))
    assert manifest["public"] is False
    assert manifest["hook_attributes"]["url"].startswith("https://") and manifest["redirect_url"]
    validate_manifest(manifest)  # what the emulated registration page accepts


def test_emulated_event_rules_are_githubs() -> None:
    """The emulator's event → permission table and always-delivered events, read from GitHub's description."""
    root = fixtures_dir()
    if root is None:
        pytest.skip("RETRAIN_FIXTURES not set: GitHub's webhook descriptions are not here")
    hooks = json.loads((root / "github/openapi/api.github.com.json").read_text())["x-webhooks"]
    summaries: dict[str, list[str]] = {}
    for op in hooks.values():
        summaries.setdefault(op["post"]["x-github"]["subcategory"], []).append(op["post"]["summary"])
    names = {"issues": "Issues", "contents": "Contents", "actions": "Actions", "checks": "Checks",
             "pull_requests": "Pull requests"}
    for event, permission in EVENT_PERMISSION.items():
        wanted = f'must have at least read-level access for the "{names[permission]}"'
        assert summaries.get(event) and all(wanted in s for s in summaries[event]), event
    for event in ALWAYS_DELIVERED:
        wanted = "All GitHub Apps receive this event by default. You cannot manually subscribe to this event."
        assert summaries.get(event) and all(wanted in s for s in summaries[event]), event


def test_the_emulated_registration_page_refuses_what_github_refuses() -> None:
    good = load_manifest(MANIFEST_PATH)
    for bad, reason in [
        ({**good, "default_events": [*good["default_events"], "installation"]}, "delivered to every GitHub App"),
        ({**good, "default_permissions": {"contents": "write"}}, "needs the"),
        ({**good, "url": "not a url"}, "full http"),
        ({**good, "hook_attributes": {"active": True}}, "hook_attributes.url"),
        ({**good, "default_event": ["push"]}, "unknown manifest keys"),
    ]:
        with pytest.raises(ValueError, match=reason):
            validate_manifest(bad)


# --- pieces ---------------------------------------------------------------------------------------------------
def test_new_app_urls_for_people_organizations_and_enterprise() -> None:
    github = Settings(_env_file=None)
    ghes = Settings(_env_file=None, github_api_url="https://ghe.example.com/api/v3")
    assert new_app_url(github.web_url, "s-1") == "https://github.com/settings/apps/new?state=s-1"
    assert new_app_url(github.web_url, "s", "my-org") == "https://github.com/organizations/my-org/settings/apps/new?state=s"
    assert new_app_url(ghes.web_url, "s") == "https://ghe.example.com/settings/apps/new?state=s"


def test_write_env_updates_in_place_and_keeps_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "RETRAIN_REDIS_URL", "RETRAIN_APP_ID", "RETRAIN_PRIVATE_KEY", "RETRAIN_PRIVATE_KEY_PATH"):
        monkeypatch.delenv(name, raising=False)  # the environment would win over the file (scripts/test sets one)
    env = tmp_path / ".env"
    env.write_text("# mine\nRETRAIN_REDIS_URL=redis://r:6379/0\nexport RETRAIN_APP_ID=1\n"
                   "RETRAIN_PRIVATE_KEY=\"-----BEGIN KEY-----\nabc\n-----END KEY-----\"\nOTHER='x y'\n"
                   "RETRAIN_APP_ID=2\n")
    env.chmod(0o644)
    write_env(env, {"RETRAIN_APP_ID": "77", "RETRAIN_PRIVATE_KEY_PATH": "/keys/my key.pem"},
              remove=("RETRAIN_PRIVATE_KEY",))
    assert env.read_text() == ("# mine\nRETRAIN_REDIS_URL=redis://r:6379/0\nRETRAIN_APP_ID=77\nOTHER='x y'\n"
                               "RETRAIN_PRIVATE_KEY_PATH='/keys/my key.pem'\n")
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    settings = Settings(_env_file=env)
    assert settings.app_id == "77" and str(settings.private_key_path) == "/keys/my key.pem"
    assert settings.private_key is None and settings.redis_url == "redis://r:6379/0"


# --- the code exchange against the emulator -------------------------------------------------------------------
def test_a_code_works_once_and_for_an_hour(github: tuple[GitHubEmulator, str]) -> None:
    emu, base = github
    code = emu.add_manifest_code(load_manifest(MANIFEST_PATH), name="Retrain Once")
    path = f"/app-manifests/{code}/conversions"
    reply = http("POST", base + path)
    assert reply.status == 201
    body = reply.json()
    if emu.spec.source != "embedded":  # the answer is the shape GitHub documents for apps/create-from-manifest
        op = emu.spec.match("POST", path)
        assert op is not None and op.spec["operationId"] == "apps/create-from-manifest"
        assert emu.spec.response_errors(op, 201, body) == []
    assert body["pem"].startswith("-----BEGIN RSA PRIVATE KEY-----") and body["webhook_secret"]
    assert body["permissions"] == load_manifest(MANIFEST_PATH)["default_permissions"]
    assert body["slug"] == "retrain-once" and body["html_url"].endswith("/apps/retrain-once")

    again = http("POST", base + path)
    assert again.status == 404 and again.json()["message"] == "Not Found"
    assert again.json()["documentation_url"].startswith("https://docs.github.com/rest/apps/apps")
    with pytest.raises(RegistrationError, match="already used or is older than an hour"):
        asyncio.run(exchange_code(base, code))
    expired = emu.add_manifest_code(load_manifest(MANIFEST_PATH), name="Retrain Late", ttl_s=0)
    with pytest.raises(RegistrationError, match="already used or is older than an hour"):
        asyncio.run(exchange_code(base, expired))
    assert emu.violations == []


async def _app_jwt_get(base: str, settings: Settings, path: str) -> dict[str, Any]:
    app_id, key = settings.require_app()
    async with aiohttp.ClientSession() as session:
        gh = GitHubAPI(session, "retrain-test", base_url=base)
        return await gh.getitem(path, jwt=get_jwt(app_id=app_id, private_key=key),
                                extra_headers={"X-GitHub-Api-Version": "2022-11-28"})


# --- the whole flow over HTTP ---------------------------------------------------------------------------------
class _Form(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action = self.method = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.action, self.method = a.get("action"), a.get("method")
        elif tag == "input" and a.get("name"):
            self.fields[str(a["name"])] = a.get("value") or ""


def _form(page: str) -> _Form:
    parser = _Form()
    parser.feed(page)
    return parser


def _registration(base: str, tmp_path: Path, **kw: Any) -> Registration:
    settings = Settings(_env_file=None, github_api_url=base)
    return Registration(api_url=settings.github_api_url, web_url=settings.web_url, webhook_url=WEBHOOK,
                        env_file=tmp_path / ".env", key_file=tmp_path / "keys" / "app.pem", port=0, **kw)


def test_register_over_http_writes_working_credentials(github: tuple[GitHubEmulator, str], tmp_path: Path,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    emu, base = github
    (tmp_path / ".env").write_text("# deployment\nRETRAIN_REDIS_URL=redis://r:6379/0\nRETRAIN_APP_ID=1\n")
    reg = _registration(base, tmp_path, name="Retrain Test")

    async def go() -> AppCredentials:
        await reg.start()
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(reg.url) as r:
                    assert r.status == 200
                    form = _form(await r.text())
                assert form.method == "post" and form.action == f"{base}/settings/apps/new?state={reg.state}"
                manifest = json.loads(form.fields["manifest"])
                shipped = load_manifest(MANIFEST_PATH)
                assert manifest["default_permissions"] == shipped["default_permissions"]
                assert manifest["default_events"] == shipped["default_events"]
                assert manifest["hook_attributes"] == {"url": WEBHOOK, "active": True}
                assert manifest["redirect_url"] == reg.redirect_url == f"http://127.0.0.1:{reg.port}/callback"
                assert manifest["name"] == "Retrain Test" and manifest["url"] == "https://retrain.example.com/"

                # Not from this page: refused, and the command keeps waiting.
                async with s.get(reg.redirect_url, params={"code": "x", "state": "forged"}) as r:
                    assert r.status == 400
                async with s.get(reg.url, headers={"Host": f"rebound.example:{reg.port}"}) as r:
                    assert r.status == 421 and reg.state not in await r.text()

                # The person confirms on (emulated) GitHub, which redirects to the callback.
                async with s.post(form.action, data={"manifest": form.fields["manifest"]},
                                  allow_redirects=False) as r:
                    assert r.status == 302, await r.text()
                    location = r.headers["Location"]
                query = parse_qs(urlsplit(location).query)
                assert location.startswith(reg.redirect_url + "?") and query["state"] == [reg.state]
                async with s.get(location) as r:
                    assert r.status == 200 and "Registered Retrain Test" in await r.text()
                async with s.get(location) as r:
                    assert r.status == 409  # once
            return await asyncio.wait_for(reg.wait(), 10)
        finally:
            await reg.stop()

    creds = asyncio.run(go())
    app = emu.apps[str(creds.id)]
    env, key = tmp_path / ".env", tmp_path / "keys" / "app.pem"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600 and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().strip() == app.pem.strip()
    assert env.read_text().splitlines()[:3] == ["# deployment", "RETRAIN_REDIS_URL=redis://r:6379/0",
                                                f"RETRAIN_APP_ID={creds.id}"]
    settings = Settings(_env_file=env, github_api_url=base)
    assert settings.app_id == str(creds.id) and settings.private_key_path == key.resolve()
    assert settings.webhook_secret is not None and settings.webhook_secret.get_secret_value() == app.webhook_secret
    assert app.info["owner"]["login"] == emu.web_user and app.info["events"] == manifest_events()

    # The written credentials authenticate as the new App.
    me = asyncio.run(_app_jwt_get(base, settings, "/app"))
    assert me["id"] == creds.id and me["slug"] == "retrain-test" and me["installations_count"] == 0
    if emu.spec.source != "embedded":
        op = emu.spec.match("GET", "/app")
        assert op is not None and emu.spec.response_errors(op, 200, me) == []
    assert asyncio.run(_app_jwt_get(base, settings, "/app/hook/deliveries")) == []  # its own, none yet
    minted = http("POST", f"{base}/app/installations/42/access_tokens",
                  auth=f"Bearer {get_jwt(app_id=str(creds.id), private_key=str(app.pem))}")
    assert minted.status == 404  # installation 42 is another App's

    with pytest.raises(OSError):  # the server is gone
        socket.create_connection(("127.0.0.1", reg.port), timeout=2).close()
    out, err = capfd.readouterr()
    for secret in (app.webhook_secret, app.client_secret, app.pem.splitlines()[1]):
        assert secret and secret not in out + err
    assert repr(creds).count("BEGIN") == 0 and app.webhook_secret not in repr(creds)


def manifest_events() -> list[str]:
    return load_manifest(MANIFEST_PATH)["default_events"]


def test_a_used_code_ends_the_command_with_a_clear_message(github: tuple[GitHubEmulator, str],
                                                           tmp_path: Path) -> None:
    emu, base = github
    code = emu.add_manifest_code(load_manifest(MANIFEST_PATH), name="Retrain Used")
    assert http("POST", f"{base}/app-manifests/{code}/conversions").status == 201
    reg = _registration(base, tmp_path)

    async def go() -> tuple[int, str]:
        await reg.start()
        try:
            async with aiohttp.ClientSession() as s, s.get(reg.redirect_url,
                                                           params={"code": code, "state": reg.state}) as r:
                status, page = r.status, await r.text()
            with pytest.raises(RegistrationError, match="already used or is older than an hour"):
                await asyncio.wait_for(reg.wait(), 10)
            return status, page
        finally:
            await reg.stop()

    status, page = asyncio.run(go())
    assert status == 502 and "already used or is older than an hour" in page
    assert not (tmp_path / ".env").exists() and not (tmp_path / "keys").exists()


def test_a_busy_port_is_a_clear_error(github: tuple[GitHubEmulator, str], tmp_path: Path) -> None:
    _, base = github
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        reg = _registration(base, tmp_path)
        reg.port = busy.getsockname()[1]
        with pytest.raises(RegistrationError, match=f"port {reg.port} on 127.0.0.1 is in use"):
            asyncio.run(reg.start())


# --- the command ----------------------------------------------------------------------------------------------
def _person_in_a_browser(seen: list[str], threads: list[threading.Thread]) -> Any:
    """A stand-in for webbrowser.open: opens the page, submits its form to GitHub, follows the redirect."""

    def open_(url: str) -> bool:
        async def go() -> None:
            async with aiohttp.ClientSession() as s:
                async with s.get(url) as r:
                    form = _form(await r.text())
                async with s.post(str(form.action), data=form.fields) as r:  # follows GitHub's redirect
                    seen.append(await r.text())

        threads.append(threading.Thread(target=asyncio.run, args=(go(),)))
        threads[-1].start()
        return True

    return open_


def test_the_register_command(github: tuple[GitHubEmulator, str], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    emu, base = github
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RETRAIN_GITHUB_API_URL", base)
    pages: list[str] = []
    threads: list[threading.Thread] = []
    monkeypatch.setattr("webbrowser.open", _person_in_a_browser(pages, threads))
    args = ["register", "--webhook-url", WEBHOOK, "--org", "octo-org", "--name", "Retrain CLI", "--port", "0"]
    assert cli.main(args) == 0
    for thread in threads:
        thread.join(10)
    out, err = capfd.readouterr()
    app = next(a for a in emu.apps.values() if a.info.get("slug") == "retrain-cli")
    assert app.info["owner"] == {**app.info["owner"], "login": "octo-org", "type": "Organization"}
    assert f"{app.info['html_url']}/installations/new" in out and app.info["html_url"] in out
    assert "Registered Retrain CLI" in pages[0]
    for secret in (app.webhook_secret, app.client_secret, app.pem.splitlines()[1]):
        assert secret and secret not in out + err
    key = tmp_path / "retrain-app-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
    settings = Settings(github_api_url=base)  # the .env just written, in the working directory
    assert asyncio.run(_app_jwt_get(base, settings, "/app"))["slug"] == "retrain-cli"

    # Again: the key file is not overwritten without --force, and nothing is served or registered.
    before = len(emu.apps)
    assert cli.main(args) == 2
    assert "retrain-app-key.pem exists; pass --force" in capfd.readouterr().err
    assert len(emu.apps) == before and not threads[1:]

    # With --force: a second App, its key over the first's, the env file's keys updated in place.
    first_key = key.read_text()
    assert cli.main([*args[:-4], "--name", "Retrain CLI 2", "--port", "0", "--force"]) == 0
    for thread in threads:
        thread.join(10)
    second = next(a for a in emu.apps.values() if a.info.get("slug") == "retrain-cli-2")
    assert key.read_text() != first_key and key.read_text().strip() == str(second.pem).strip()
    env_lines = (tmp_path / ".env").read_text().splitlines()
    assert [line.split("=", 1)[0] for line in env_lines] == ["RETRAIN_APP_ID", "RETRAIN_PRIVATE_KEY_PATH",
                                                             "RETRAIN_WEBHOOK_SECRET"]
    assert env_lines[0] == f"RETRAIN_APP_ID={second.id}"


def test_register_refuses_a_webhook_url_that_is_not_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["register", "--webhook-url", "retrain.example.com/webhook", "--no-browser"]) == 2
    assert "the webhook URL must be a full URL" in capfd.readouterr().err
