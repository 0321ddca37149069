"""The App's webhook deliveries: list them (App JWT, cursor pagination) and ask for a redelivery.

As GitHub's Api::Integrations handlers do: both endpoints take only the App's JWT; the list is newest
first, `per_page` defaults to 30 and is capped at 100, and the next page is named in a `Link` header
with a `cursor`; a redelivery of a known delivery is answered 202 with an empty body (`deliver_empty`),
an unknown one 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from .openapi import Operation
from .rest import Handler, fail, not_found, require_app_jwt
from .state import next_id, now_iso

if TYPE_CHECKING:
    from .emulator import GitHubEmulator

DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 100


def delivery_json(*, guid: str, event: str, action: str | None, status_code: int, redelivery: bool,
                  installation_id: int | None, repository_id: int | None, delivered_at: str | None = None,
                  duration: float = 0.31) -> dict[str, Any]:
    """A `hook-delivery-item`; the status text is what GitHub shows ("OK", "Invalid HTTP Response: 502")."""
    status = "OK" if 200 <= status_code < 300 else f"Invalid HTTP Response: {status_code}"
    return {"id": next_id(), "guid": guid, "delivered_at": delivered_at or now_iso(), "redelivery": redelivery,
            "duration": duration, "status": status,
            "status_code": status_code, "event": event, "action": action, "installation_id": installation_id,
            "repository_id": repository_id, "throttled_at": None}


def _page_size(raw: str | None) -> int:
    try:
        wanted = int(raw) if raw is not None else DEFAULT_PER_PAGE
    except ValueError:
        wanted = DEFAULT_PER_PAGE
    return max(1, min(wanted, MAX_PER_PAGE))


async def list_deliveries(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    app = require_app_jwt(request, emu)
    per_page = _page_size(request.query.get("per_page"))
    mine = emu.hook_deliveries if app.id == emu.app_id else []  # deliveries are the emulator's own App's
    newest_first = sorted(mine, key=lambda d: d["id"], reverse=True)
    status = request.query.get("status")
    if status is not None:
        if status not in ("success", "failure"):
            raise fail(op, 422, f"Invalid request.\n\n{status} is not a member of [\"success\", \"failure\"].")
        low, high = (200, 399) if status == "success" else (400, 599)
        newest_first = [d for d in newest_first if low <= d["status_code"] <= high]
    cursor = request.query.get("cursor")
    if cursor:
        start = cursor.removeprefix("v1_")
        if not start.isdigit():
            raise fail(op, 422, f"Invalid request.\n\nInvalid cursor: {cursor}")  # wording not seen from GitHub
        newest_first = [d for d in newest_first if d["id"] <= int(start)]
    page, rest = newest_first[:per_page], newest_first[per_page:]
    headers = {}
    if rest:
        headers["Link"] = (f'<{emu.base_url}/app/hook/deliveries?per_page={per_page}&cursor=v1_{rest[0]["id"]}'
                           f'{"&status=" + status if status else ""}>; rel="next"')
    return web.json_response(page, headers=headers)


async def redeliver(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    app = require_app_jwt(request, emu)
    raw = op.params["delivery_id"]
    mine = emu.hook_deliveries if app.id == emu.app_id else []
    found = next((d for d in mine if raw.isdigit() and d["id"] == int(raw)), None)
    if found is None:
        raise not_found()
    emu.record_redelivery(found)
    return web.Response(status=202)


HANDLERS: dict[tuple[str, str], Handler] = {
    ("GET", "/app/hook/deliveries"): list_deliveries,
    ("POST", "/app/hook/deliveries/{delivery_id}/attempts"): redeliver,
}
