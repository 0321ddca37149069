"""GitHub Apps: registration from a manifest, the code exchange, and App JWTs of every registered App.

What GitHub does, and the emulator with it:
- The web flow: a form POSTs `manifest` (JSON) to `/settings/apps/new?state=S` (or
  `/organizations/ORG/settings/apps/new`); the person confirms, GitHub registers the App at once and
  redirects the browser to the manifest's `redirect_url` with `?code=C&state=S`. The emulator skips the
  confirmation page (no one is signed in to it; the account is `web_user`).
- `POST /app-manifests/{code}/conversions` (operation `apps/create-from-manifest`) takes no credentials
  and answers 201 with the App (`integration`) plus `client_id`, `client_secret`, `webhook_secret` and
  `pem`. A code works once and for one hour ("You must complete all three steps ... within one hour");
  an unknown, used or expired code is 404 `Not Found`.
- The `pem` is a real RSA key: JWTs signed with it authenticate as the new App (`GET /app` included).
- An event may be subscribed only with the permission GitHub's webhook descriptions name for it
  (`EVENT_PERMISSION`, checked against api.github.com.json by test_register.py); `installation` and
  `installation_repositories` are delivered to every App and cannot be subscribed to.
  GitHub's registration page refuses such a manifest; its wording is not reproduced.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .auth import AuthError, verify_app_jwt
from .checks import integration_json
from .openapi import Operation
from .rest import Handler, fail, require_app_jwt
from .state import HTML, next_id, node_id, now_iso, user_json

if TYPE_CHECKING:
    from .emulator import GitHubEmulator

CODE_TTL_S = 3600
MANIFEST_KEYS = {"name", "url", "hook_attributes", "redirect_url", "callback_urls", "setup_url", "description",
                 "public", "default_events", "default_permissions", "request_oauth_on_install", "setup_on_update"}
ACCESS = {"read", "write", "admin"}
# "To subscribe to this event, a GitHub App must have at least read-level access for the "X" repository
# permission" (api.github.com.json, x-webhooks summaries).
EVENT_PERMISSION = {"issue_comment": "issues", "issues": "issues", "workflow_dispatch": "contents",
                    "workflow_run": "actions", "workflow_job": "actions", "check_run": "checks",
                    "check_suite": "checks", "push": "contents", "pull_request": "pull_requests"}
ALWAYS_DELIVERED = {"installation", "installation_repositories"}


@dataclass
class RegisteredApp:
    """An App GitHub knows: its public key verifies its JWTs; the secrets exist for manifest-made Apps."""

    id: str
    public_key_pem: bytes
    info: dict[str, Any]  # the `integration` object (empty for the emulator's own App: see app_json)
    pem: str | None = field(default=None, repr=False)
    client_secret: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    manifest: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ManifestCode:
    app_id: str
    expires_at: float


def _slug(name: str) -> str:
    out = "".join(c.lower() if c.isalnum() else "-" for c in name.strip())
    return "-".join(p for p in out.split("-") if p)


def _http_url(value: Any, what: str) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"manifest {what} must be a full http(s) URL, not {value!r}")
    return str(value)


def validate_manifest(manifest: Any) -> None:
    """What GitHub's registration page refuses (ValueError naming the problem)."""
    if not isinstance(manifest, dict):
        raise ValueError("the manifest must be a JSON object")
    unknown = sorted(set(manifest) - MANIFEST_KEYS)
    if unknown:
        raise ValueError(f"unknown manifest keys: {', '.join(unknown)}")
    _http_url(manifest.get("url"), "url")
    hook = manifest.get("hook_attributes")
    if hook is not None:
        if not isinstance(hook, dict) or set(hook) - {"url", "active"}:
            raise ValueError("manifest hook_attributes takes url and active")
        _http_url(hook.get("url"), "hook_attributes.url")
    for key in ("redirect_url", "setup_url"):
        if manifest.get(key) is not None:
            _http_url(manifest[key], key)
    perms = manifest.get("default_permissions") or {}
    if not isinstance(perms, dict) or any(not isinstance(v, str) or v not in ACCESS for v in perms.values()):
        raise ValueError("manifest default_permissions maps permission names to read, write or admin")
    events = manifest.get("default_events") or []
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise ValueError("manifest default_events is a list of event names")
    for event in events:
        if event in ALWAYS_DELIVERED:
            raise ValueError(f"{event} is delivered to every GitHub App and cannot be subscribed to")
        needed = EVENT_PERMISSION.get(event)
        if needed is not None and needed not in perms:
            raise ValueError(f"the {event} event needs the {needed} permission")


def _private_key() -> tuple[str, bytes]:
    """(PEM as GitHub hands it out: PKCS#1 "RSA PRIVATE KEY", public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private.decode(), public


def register_from_manifest(emu: GitHubEmulator, manifest: dict[str, Any], *, owner: str,
                           owner_type: str = "User", name: str | None = None) -> RegisteredApp:
    """Register an App as GitHub does when the person confirms the manifest; returns it."""
    validate_manifest(manifest)
    name = (name or manifest.get("name") or "").strip()
    if not name:
        raise ValueError("the App needs a name")
    slug = _slug(name)
    taken = {a.info.get("slug") for a in emu.apps.values()} | {emu.bot_login.removesuffix("[bot]")}
    if not slug or slug in taken:
        raise ValueError(f"the name {name!r} is already taken")
    pem, public = _private_key()
    app_id, stamp = next_id(), now_iso()
    perms = {"metadata": "read", **(manifest.get("default_permissions") or {})}
    hooked = bool((manifest.get("hook_attributes") or {}).get("url"))
    record = RegisteredApp(
        id=str(app_id), public_key_pem=public, pem=pem, manifest=dict(manifest),
        client_secret=secrets.token_hex(20), webhook_secret=secrets.token_hex(20) if hooked else None,
        info={"id": app_id, "slug": slug, "node_id": node_id("A", str(app_id)),
              "client_id": "Iv23li" + secrets.token_hex(7),
              "owner": user_json(emu.base_url, owner, user_type=owner_type), "name": name,
              "description": manifest.get("description") or "", "external_url": manifest["url"],
              "html_url": f"{HTML}/apps/{slug}", "created_at": stamp, "updated_at": stamp,
              "permissions": perms, "events": list(manifest.get("default_events") or [])})
    emu.apps[record.id] = record
    return record


def add_code(emu: GitHubEmulator, app: RegisteredApp, ttl_s: float = CODE_TTL_S) -> str:
    code = secrets.token_hex(20)
    emu.manifest_codes[code] = ManifestCode(app.id, time.time() + ttl_s)
    return code


def authenticate_app(emu: GitHubEmulator, token: str) -> RegisteredApp:
    """The registered App whose key signed this JWT (`iss` names it), checked by GitHub's rules."""
    try:
        iss = jwt.decode(token, options={"verify_signature": False}).get("iss")
    except jwt.PyJWTError as exc:
        raise AuthError("A JSON web token could not be decoded") from exc
    app = emu.apps.get(str(iss)) if isinstance(iss, int | str) else None
    if app is None:
        raise AuthError("A JSON web token could not be decoded")
    verify_app_jwt(token, public_key_pem=app.public_key_pem, app_id=app.id)
    return app


def app_json(emu: GitHubEmulator, app: RegisteredApp) -> dict[str, Any]:
    """The `integration` object of a registered App."""
    return integration_json(emu) if app.id == emu.app_id else dict(app.info)


async def create_from_manifest(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    grant = emu.manifest_codes.pop(op.params["code"], None)
    if grant is None or grant.expires_at <= time.time():
        raise fail(op, 404, "Not Found")
    app = emu.apps[grant.app_id]
    return web.json_response({**app_json(emu, app), "client_secret": app.client_secret,
                              "webhook_secret": app.webhook_secret, "pem": app.pem}, status=201)


async def get_authenticated_app(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    app = require_app_jwt(request, emu)
    count = len(emu.installations) if app.id == emu.app_id else 0
    return web.json_response({**app_json(emu, app), "installations_count": count})


async def new_app_page(request: web.Request, emu: GitHubEmulator) -> web.StreamResponse:
    """github.com/settings/apps/new (or an organization's): register from the posted manifest, redirect."""
    form = await request.post()
    org = request.match_info.get("org")
    try:
        manifest = json.loads(str(form.get("manifest", "")))
        app = register_from_manifest(emu, manifest, owner=org or emu.web_user,
                                     owner_type="Organization" if org else "User")
    except ValueError as exc:
        return web.Response(status=422, text=f"The manifest cannot be used: {exc}", content_type="text/html")
    code = add_code(emu, app)
    if not manifest.get("redirect_url"):
        return web.Response(text=f"Registered {app.info['html_url']}", content_type="text/html")
    query = {"code": code, **({"state": request.query["state"]} if "state" in request.query else {})}
    sep = "&" if urlsplit(manifest["redirect_url"]).query else "?"
    return web.Response(status=302, headers={"Location": manifest["redirect_url"] + sep + urlencode(query)})


HANDLERS: dict[tuple[str, str], Handler] = {
    ("POST", "/app-manifests/{code}/conversions"): create_from_manifest,
    ("GET", "/app"): get_authenticated_app,
}
