"""The webhook receiver: verify, dedupe, enqueue, answer 202. No GitHub calls and no heavy work here,
since GitHub fails a delivery that takes over 10 s and never retries it by itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from gidgethub import BadRequest, ValidationFailure, sansio

from app.settings import Settings

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB
DELIVERY_KEY = "retrain:delivery:{}"

Enqueue = Callable[[str, str, dict[str, Any]], Awaitable[None]]


def celery_enqueue(settings: Settings) -> Enqueue:
    """Send the events task by name; the Celery client is blocking, so it runs in a thread."""
    from workers.celery_app import EVENTS_QUEUE, EVENTS_TASK, celery_app

    async def enqueue(event: str, delivery_id: str, payload: dict[str, Any]) -> None:
        await asyncio.to_thread(
            celery_app.send_task, EVENTS_TASK, args=(event, delivery_id, payload), queue=EVENTS_QUEUE
        )

    return enqueue


def parse_delivery(headers: Any, body: bytes, secret: str) -> sansio.Event:
    """A verified event, or `web.HTTPException` with the status GitHub's delivery log should show."""
    if not headers.get("x-hub-signature-256"):  # the SHA-1 signature alone is not accepted
        raise web.HTTPUnauthorized(text="missing X-Hub-Signature-256")
    verified_headers = {k.lower(): v for k, v in headers.items() if k.lower() != "x-hub-signature"}
    try:
        event = sansio.Event.from_http(verified_headers, body, secret=secret)
    except ValidationFailure as exc:
        raise web.HTTPUnauthorized(text="signature does not match") from exc
    except BadRequest as exc:
        raise web.HTTPBadRequest(text=f"malformed delivery: {exc}") from exc
    except (KeyError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text=f"malformed delivery: missing {exc}") from exc
    if not isinstance(event.data, dict) or not event.delivery_id or not event.event:
        raise web.HTTPBadRequest(text="malformed delivery: expected a JSON object with event and delivery id")
    return event


def create_app(settings: Settings, *, enqueue: Enqueue | None = None) -> web.Application:
    if settings.webhook_secret is None or not settings.webhook_secret.get_secret_value():
        raise ValueError("refusing to start without a webhook secret: set RETRAIN_WEBHOOK_SECRET")
    secret = settings.webhook_secret.get_secret_value()
    send = enqueue or celery_enqueue(settings)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    redis_key = web.AppKey("redis", aioredis.Redis)

    async def open_redis(app: web.Application) -> Any:
        app[redis_key] = aioredis.from_url(settings.redis_url)
        yield
        await app[redis_key].aclose()

    async def webhook(request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="expected content-type application/json")
        body = await request.read()
        event = parse_delivery(request.headers, body, secret)
        key = DELIVERY_KEY.format(event.delivery_id)
        store = request.app[redis_key]
        if not await store.set(key, "1", nx=True, ex=settings.delivery_ttl_s):
            log.info("duplicate delivery %s ignored", event.delivery_id)
            return web.json_response({"status": "duplicate"}, status=200)
        try:
            await send(event.event, event.delivery_id, event.data)
        except Exception:
            await store.delete(key)  # let GitHub's redelivery try again
            log.exception("could not enqueue delivery %s", event.delivery_id)
            raise web.HTTPServiceUnavailable(text="could not enqueue; redeliver later") from None
        log.info("enqueued %s delivery %s", event.event, event.delivery_id)
        return web.json_response({"status": "accepted", "delivery": event.delivery_id}, status=202)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.cleanup_ctx.append(open_redis)
    app.router.add_post("/webhook", webhook)
    app.router.add_get("/healthz", healthz)
    return app


def serve(settings: Settings, host: str, port: int) -> None:
    app = create_app(settings)
    logging.getLogger(__name__).info("listening on %s:%d", host, port)
    web.run_app(app, host=host, port=port, print=None)


def signature_for(body: bytes, secret: str) -> str:
    """What GitHub puts in X-Hub-Signature-256 (used by tests and the load benchmark)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
