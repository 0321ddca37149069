"""`retrain register`: create the GitHub App from `deploy/app-manifest.json` with GitHub's manifest flow.

1. A page on 127.0.0.1:PORT posts the manifest (the webhook URL, `redirect_url` = this server's /callback,
   the name) to `{web}/settings/apps/new?state=STATE` (or an organization's); the person confirms there.
2. GitHub registers the App and sends the browser to `/callback?code=CODE&state=STATE`. A wrong state is
   refused with 400 and the command keeps waiting: only the page this command served knows the state, so
   another site cannot make it store credentials of an App of its choosing (CSRF).
3. The code (one use, valid for an hour) is exchanged, without credentials, at
   `POST {api}/app-manifests/{code}/conversions`. The App's private key goes to the key file and
   RETRAIN_APP_ID, RETRAIN_PRIVATE_KEY_PATH and RETRAIN_WEBHOOK_SECRET to the env file (both mode 0600);
   the App's page and its installation URL are printed, never a secret. Then the server stops.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import html
import json
import os
import re
import secrets
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp import web
from gidgethub import BadRequest, GitHubBroken, GitHubException

from app.errors import RetrainError
from app.github.client import MeteredGitHubAPI

MANIFEST_PATH = Path(__file__).resolve().parent.parent / "deploy" / "app-manifest.json"
USER_AGENT = "retrain-app"
APP_ID, KEY_PATH, WEBHOOK_SECRET = "RETRAIN_APP_ID", "RETRAIN_PRIVATE_KEY_PATH", "RETRAIN_WEBHOOK_SECRET"
# Settings refuses a key given twice, so a key value in the env file goes when the path is written.
REPLACED_BY_PATH = ("RETRAIN_PRIVATE_KEY",)
_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_./:@+,=-]*")


class RegistrationError(RetrainError):
    """The App could not be registered or its credentials not stored; the message says what to do."""


@dataclass(frozen=True)
class AppCredentials:
    """What GitHub hands over once for a new App (the secrets never show in a repr)."""

    id: int
    slug: str
    name: str
    html_url: str
    client_id: str
    pem: str = field(repr=False)
    webhook_secret: str | None = field(repr=False)
    client_secret: str | None = field(repr=False)

    @property
    def installation_url(self) -> str:
        return f"{self.html_url.rstrip('/')}/installations/new"


# --- the manifest ---------------------------------------------------------------------------------------------
def load_manifest(path: Path = MANIFEST_PATH) -> dict[str, Any]:
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise RegistrationError(f"cannot read the App manifest {path}: {exc}") from exc
    if not isinstance(manifest, dict):
        raise RegistrationError(f"the App manifest {path} is not a JSON object")
    return manifest


def _http_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RegistrationError(f"{what} must be a full URL such as https://retrain.example.com/webhook, "
                                f"not {value!r}")
    return value


def build_manifest(template: Mapping[str, Any], *, webhook_url: str, redirect_url: str, name: str | None = None,
                   homepage: str | None = None) -> dict[str, Any]:
    """The manifest to post: the template with this deployment's webhook, redirect, name and homepage."""
    parts = urlsplit(_http_url(webhook_url, "the webhook URL"))
    manifest = json.loads(json.dumps(template))  # a deep copy
    manifest["hook_attributes"] = {**(manifest.get("hook_attributes") or {}), "url": webhook_url, "active": True}
    manifest["redirect_url"] = redirect_url
    manifest["url"] = _http_url(homepage, "the homepage URL") if homepage else f"{parts.scheme}://{parts.netloc}/"
    if name:
        manifest["name"] = name
    return manifest


def new_app_url(web_url: str, state: str, org: str | None = None) -> str:
    """Where the manifest is posted: the person's own Apps, or an organization's."""
    base = web_url.rstrip("/")
    where = f"/organizations/{quote(org, safe='')}/settings/apps/new" if org else "/settings/apps/new"
    return f"{base}{where}?state={quote(state, safe='')}"


# --- the code exchange ----------------------------------------------------------------------------------------
async def exchange_code(api_url: str, code: str, *, session: aiohttp.ClientSession | None = None
                        ) -> AppCredentials:
    """Trade the one-time code for the App's id, key and secrets (no credentials needed)."""
    own = session is None
    session = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    try:
        gh = MeteredGitHubAPI(session, USER_AGENT, base_url=api_url.rstrip("/"))  # names the API version
        data = await gh.post("/app-manifests/{code}/conversions", {"code": code}, data=b"")
    except BadRequest as exc:
        if exc.status_code == 404:
            raise RegistrationError(
                "GitHub does not know this code: it was already used or is older than an hour. The App may "
                "exist anyway: delete it on GitHub (Settings > Developer settings > GitHub Apps) or pick "
                "another --name, and run `retrain register` again") from exc
        raise RegistrationError(f"GitHub refused the code ({exc.status_code}: {exc})") from exc
    except GitHubBroken as exc:
        raise RegistrationError(f"GitHub failed to answer ({exc.status_code}); try again") from exc
    except GitHubException as exc:
        raise RegistrationError(f"GitHub refused the code: {exc}") from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise RegistrationError(f"cannot reach {api_url}: {exc}") from exc
    finally:
        if own:
            await session.close()
    try:
        return AppCredentials(
            id=int(data["id"]), slug=str(data["slug"]), name=str(data["name"]), html_url=str(data["html_url"]),
            client_id=str(data.get("client_id") or ""), pem=str(data["pem"]),
            webhook_secret=data.get("webhook_secret") or None, client_secret=data.get("client_secret"))
    except (KeyError, TypeError, ValueError) as exc:
        raise RegistrationError(f"GitHub's answer lacks the App's {exc}") from exc


# --- storing the credentials ----------------------------------------------------------------------------------
def check_key_file(path: Path, *, force: bool) -> None:
    """Fail before anything is registered when the key file would have to be overwritten."""
    if path.exists() and not force:
        raise RegistrationError(f"{path} exists; pass --force to overwrite it or choose another --key-file")


def write_key_file(path: Path, pem: str, *, force: bool) -> None:
    """The PEM, readable by its owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise RegistrationError(f"{path} exists; pass --force to overwrite it") from exc
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(pem if pem.endswith("\n") else pem + "\n")


def _env_value(value: str) -> str:
    if _PLAIN_VALUE.fullmatch(value):
        return value
    if "'" not in value and "\n" not in value:
        return f"'{value}'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _value_ends(value: str) -> bool:
    """Whether a value that starts on this line also ends on it (quoted values may span lines)."""
    value = value.strip()
    if not value or value[0] not in "'\"":
        return True
    rest = value[1:]
    if value[0] == "'":
        return "'" in rest
    return re.search(r'(?<!\\)(?:\\\\)*"', rest) is not None


def _continues(line: str, quote_char: str) -> bool:
    """Whether a continuation line of a quoted value leaves it still open."""
    if quote_char == "'":
        return "'" not in line
    return re.search(r'(?<!\\)(?:\\\\)*"', line) is None


def write_env(path: Path, values: Mapping[str, str], *, remove: tuple[str, ...] = ()) -> None:
    """Set `values` in the env file: existing keys are updated in place, other lines kept, `remove`d keys
    dropped, new keys appended. Written whole (atomic rename), readable by its owner only (0600)."""
    lines = path.read_text().splitlines() if path.exists() else []
    out: list[str] = []
    written: set[str] = set()
    skipping: str | None = None  # the quote of a dropped value that spans lines
    for line in lines:
        if skipping is not None:
            if not _continues(line, skipping):
                skipping = None
            continue
        match = _ENV_LINE.match(line)
        key = match.group(1) if match else None
        if key is not None and (key in values or key in remove):
            if not _value_ends(match.group(2)):  # type: ignore[union-attr]
                skipping = match.group(2).strip()[0]  # type: ignore[union-attr]
            if key in values and key not in written:
                out.append(f"{key}={_env_value(values[key])}")
                written.add(key)
            continue
        out.append(line)
    out += [f"{key}={_env_value(value)}" for key, value in values.items() if key not in written]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write("\n".join(out) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_credentials(creds: AppCredentials, *, env_file: Path, key_file: Path, force: bool) -> list[str]:
    """Key file, then env file; returns the env keys written."""
    try:
        write_key_file(key_file, creds.pem, force=force)
        values = {APP_ID: str(creds.id), KEY_PATH: str(key_file.resolve())}
        if creds.webhook_secret:
            values[WEBHOOK_SECRET] = creds.webhook_secret
        write_env(env_file, values, remove=REPLACED_BY_PATH)
    except OSError as exc:
        raise RegistrationError(
            f"the App {creds.html_url} was registered but its credentials could not be stored ({exc}); "
            f"generate a new private key and webhook secret on its settings page") from exc
    return list(values)


# --- the local server -----------------------------------------------------------------------------------------
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;line-height:1.5}}</style>
</head><body>
{body}
</body></html>
"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(text=PAGE.format(title=html.escape(title), body=body), status=status,
                        content_type="text/html", headers={"Cache-Control": "no-store"})


class Registration:
    """The local server of one registration: `start()`, send the person to `url`, `await wait()`, `stop()`.

    Tests drive it over real HTTP: GET `url`, post the form's manifest where it points (or take a code from
    the emulator), then GET `/callback?code=...&state=...`.
    """

    def __init__(self, *, api_url: str, web_url: str, webhook_url: str, env_file: Path, key_file: Path,
                 manifest: Mapping[str, Any] | None = None, org: str | None = None, name: str | None = None,
                 homepage: str | None = None, force: bool = False, host: str = "127.0.0.1", port: int = 8765
                 ) -> None:
        self.api_url, self.web_url, self.webhook_url = api_url, web_url, webhook_url
        self.env_file, self.key_file, self.force = Path(env_file), Path(key_file), force
        self.org, self.name, self.homepage = org, name, homepage
        self.template = dict(manifest) if manifest is not None else load_manifest()
        self.host, self.port = host, port
        self.state = secrets.token_urlsafe(32)
        self.written: list[str] = []
        build_manifest(self.template, webhook_url=webhook_url, redirect_url="http://127.0.0.1/", name=name,
                       homepage=homepage)  # bad URLs fail now, before anything is served
        self._result: asyncio.Future[AppCredentials] | None = None
        self._runner: web.AppRunner | None = None
        self._exchanging = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def redirect_url(self) -> str:
        return f"{self.url}callback"

    def manifest(self) -> dict[str, Any]:
        return build_manifest(self.template, webhook_url=self.webhook_url, redirect_url=self.redirect_url,
                              name=self.name, homepage=self.homepage)

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/callback", self._callback)
        return app

    def _local(self, request: web.Request) -> bool:
        """Only pages asked for by this host's name (no DNS rebinding onto the state)."""
        return request.host in {f"{self.host}:{self.port}", f"localhost:{self.port}", f"127.0.0.1:{self.port}"}

    async def _index(self, request: web.Request) -> web.StreamResponse:
        if not self._local(request):
            return _page("Wrong host", "<p>Open this page at its 127.0.0.1 address.</p>", 421)
        manifest = self.manifest()
        action = new_app_url(self.web_url, self.state, self.org)
        account = f"the organization <b>{html.escape(self.org)}</b>" if self.org else "your account"
        body = (
            "<h1>Register the Retrain GitHub App</h1>"
            f"<p>This registers a GitHub App named <b>{html.escape(str(manifest.get('name', '')))}</b> for "
            f"{account} on {html.escape(self.web_url)}, with its webhook at "
            f"<code>{html.escape(self.webhook_url)}</code>. GitHub shows what it asks for and lets you change "
            "the name (App names are unique on GitHub) before you confirm.</p>"
            f'<form action="{html.escape(action)}" method="post">'
            f'<input type="hidden" name="manifest" value="{html.escape(json.dumps(manifest))}">'
            '<button type="submit">Register on GitHub</button></form>'
        )
        return _page("Register Retrain", body)

    async def _callback(self, request: web.Request) -> web.StreamResponse:
        if not self._local(request):
            return _page("Wrong host", "<p>Open this page at its 127.0.0.1 address.</p>", 421)
        state, code = request.query.get("state", ""), request.query.get("code", "")
        if not hmac.compare_digest(state.encode(), self.state.encode()):
            return _page("Not this registration", "<p>This redirect does not carry the state of the page this "
                         "command served, so it is ignored. Start from that page; the command keeps waiting."
                         "</p>", 400)
        if not code:
            return _page("No code", "<p>GitHub's redirect carries no <code>code</code>.</p>", 400)
        assert self._result is not None
        if self._exchanging or self._result.done():
            return _page("Already done", "<p>This registration was already completed.</p>", 409)
        self._exchanging = True
        try:
            creds = await exchange_code(self.api_url, code)
            self.written = await asyncio.to_thread(save_credentials, creds, env_file=self.env_file,
                                                   key_file=self.key_file, force=self.force)
        except Exception as exc:  # the command must end with the reason, not hang on a half-done page
            failure = exc if isinstance(exc, RegistrationError) else RegistrationError(
                f"registration failed: {type(exc).__name__}: {exc}")
            response = _page("Registration failed", f"<p>{html.escape(str(failure))}</p>", 502)
            await self._finish(request, response, failure)
            return response
        body = (f"<h1>Registered {html.escape(creds.name)}</h1><p>Its credentials are in "
                f"<code>{html.escape(str(self.env_file))}</code>. Now "
                f'<a href="{html.escape(creds.installation_url)}">install it</a> on the repositories to train.</p>')
        response = _page("Registered", body)
        await self._finish(request, response, creds)
        return response

    async def _finish(self, request: web.Request, response: web.Response,
                      outcome: AppCredentials | RegistrationError) -> None:
        """Send the page first, then let `wait()` return (which stops the server)."""
        await response.prepare(request)
        await response.write_eof()
        assert self._result is not None
        if not self._result.done():
            if isinstance(outcome, RegistrationError):
                self._result.set_exception(outcome)
            else:
                self._result.set_result(outcome)

    async def start(self) -> str:
        """Serve; returns the page's URL. A busy port is a RegistrationError."""
        self._result = asyncio.get_running_loop().create_future()
        self._runner = web.AppRunner(self.make_app(), access_log=None)  # the query holds the one-time code
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            if exc.errno == errno.EADDRINUSE:
                raise RegistrationError(f"port {self.port} on {self.host} is in use; pass another --port") from exc
            raise RegistrationError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        self.port = self._runner.addresses[0][1]
        return self.url

    async def wait(self) -> AppCredentials:
        assert self._result is not None, "start() first"
        return await asyncio.shield(self._result)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def register_app(registration: Registration, *, open_browser: bool = True,
                       out: Callable[[str], Any] = print) -> AppCredentials:
    """The whole command: serve, point the person at the page, wait for GitHub's redirect, stop."""
    check_key_file(registration.key_file, force=registration.force)
    url = await registration.start()
    try:
        out(f"Open {url} and confirm on GitHub ({registration.web_url}); waiting for GitHub's redirect "
            f"to {registration.redirect_url} (Ctrl-C stops).")
        if open_browser:
            await asyncio.to_thread(webbrowser.open, url)
        creds = await registration.wait()
    finally:
        await registration.stop()
    out(f"Registered the GitHub App {creds.name} (id {creds.id}): {creds.html_url}")
    out(f"Wrote {', '.join(registration.written)} to {registration.env_file}; the private key is in "
        f"{registration.key_file} (both readable by you only).")
    if not creds.webhook_secret:
        out("GitHub sent no webhook secret: set one on the App's page and in RETRAIN_WEBHOOK_SECRET.")
    out(f"Install it on the repositories to train: {creds.installation_url}")
    return creds
