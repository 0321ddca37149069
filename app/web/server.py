"""The webhook receiver: verify, dedupe, enqueue, answer 202. No GitHub calls and no heavy work here,
since GitHub fails a delivery that takes over 10 s and never retries it by itself.

The dedupe and the enqueue are one Redis script (ACCEPT_SCRIPT): it sets the delivery's key and pushes a
Celery task message, built here around the delivery's body as received, onto the events queue's list.
The deliveries in flight share Redis round trips (Intake). Celery's own `send_task` costs more CPU per
delivery than all the rest of the receiver together (bench/README.md).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import hashlib
import hmac
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from gidgethub import ValidationFailure, sansio

from app.config.settings import Settings
from app.features import PLANNERS
from app.queues import EVENTS_QUEUE, EVENTS_TASK, TRAIN_QUEUE
from app.web.metrics import CONTENT_TYPE, ReceiverMetrics

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB
DELIVERY_KEY = "retrain:delivery:{}"

Enqueue = Callable[[str, str, dict[str, Any]], Awaitable[None]]
KNOWN_EVENTS = frozenset({*PLANNERS, "ping"})
REFUSED = {401: "bad_signature", 400: "malformed", 415: "unsupported_media_type", 413: "too_large"}

# Dedupe and enqueue in one step, one round trip: a delivery id is remembered if and only if its message is
# on the queue, so no failure in between can leave a delivery that GitHub's redelivery would then skip.
# Redis runs a script without interruption but keeps what it wrote before an error: undo the SET by hand.
ACCEPT_SCRIPT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return 0
end
local pushed = redis.pcall('LPUSH', KEYS[2], ARGV[2])
if type(pushed) == 'table' and pushed.err then
  redis.call('DEL', KEYS[1])
  return redis.error_reply(pushed.err)
end
return 1
"""
# What Celery puts in a message's body after the args and kwargs when a task has no canvas around it.
NO_CANVAS = b'{"callbacks": null, "errbacks": null, "chain": null, "chord": null}'
ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"  # Celery's anonymous node name for a sender


def new_task_id() -> str:
    """A random (version 4) UUID, as Celery's task ids are, from `random` rather than `os.urandom`: ids
    need to be unique, not secret, and this saves a system call per delivery."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def celery_message(task: str, args_json: bytes, *, queue: str, argsrepr: str, task_id: str | None = None) -> bytes:
    """A Celery task message (protocol 2, JSON) as kombu's Redis transport stores it in the list named
    `queue`: what `send_task(task, args, queue=queue)` would push there, without Celery's per-call cost.

    `args_json` is the task's positional arguments as a JSON array, so a caller can splice in JSON it
    already has. The message goes to the queue's list directly (the default exchange, as Celery sends
    to a named queue) with priority 0; a worker consuming the queue takes it like any other.
    """
    task_id = task_id or new_task_id()
    headers = {
        "lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None, "expires": None,
        "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id,
        "parent_id": None, "argsrepr": argsrepr, "kwargsrepr": "{}", "origin": ORIGIN, "ignore_result": None,
        "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
    }  # fmt: skip
    body = base64.b64encode(b"".join((b"[", args_json, b", {}, ", NO_CANVAS, b"]")))
    rest = {
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": task_id,  # kombu acks by it; unique as the task id is
        },
    }
    # The body goes in as is: base64 needs no JSON escaping, and json.dumps would scan all of it for some.
    return b"".join((b'{"body": "', body, b'", ', json.dumps(rest).encode()[1:]))


def event_message(event: str, delivery_id: str, body: bytes) -> bytes:
    """The events task's message for a verified delivery; `body` is the delivery's JSON, forwarded as is."""
    args_json = b"".join((json.dumps([event, delivery_id]).encode()[:-1], b", ", body, b"]"))
    argsrepr = f"({event!r}, {delivery_id!r}, <payload: {len(body)} bytes>)"  # payloads stay out of logs
    return celery_message(EVENTS_TASK, args_json, queue=EVENTS_QUEUE, argsrepr=argsrepr)


class Intake:
    """Dedupe and enqueue deliveries, many to a Redis round trip: the deliveries that reach this point in
    the same turn of the event loop share one pipeline of ACCEPT_SCRIPT calls, each still atomic on its
    own. redis-py spends about as much CPU on one command as the rest of the receiver spends on a
    delivery; shared by the deliveries in flight, it costs a fraction of that (bench/README.md).
    """

    def __init__(self, store: aioredis.Redis, ttl_s: int) -> None:
        self.store, self.ttl_s = store, ttl_s
        self.waiting: list[tuple[str, bytes, asyncio.Future[Any]]] = []
        self.sending: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

    async def accept(self, key: str, message: bytes) -> bool:
        """True if the key was new and the message is on the queue; False if the key was there."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((key, message, future))
        if len(self.waiting) == 1:  # the first of this turn sends for all that join it before the task runs
            task = asyncio.create_task(self.send())
            self.sending.add(task)
            task.add_done_callback(self.sending.discard)
        return bool(await future)

    async def send(self) -> None:
        batch, self.waiting = self.waiting, []
        try:
            async with self.store.pipeline(transaction=False) as pipe:
                for key, message, _ in batch:  # EVAL, not EVALSHA: no NOSCRIPT to handle after a Redis restart
                    pipe.execute_command("EVAL", ACCEPT_SCRIPT, 2, key, EVENTS_QUEUE, self.ttl_s, message)
                results: list[Any] = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the round trip failed: none of them is known to be on the queue
            results = [exc] * len(batch)
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():  # its request went away
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


def parse_delivery(headers: Any, body: bytes, secret: str) -> sansio.Event:
    """A verified event, or `web.HTTPException` with the status GitHub's delivery log should show.

    gidgethub checks the signature (constant-time HMAC); the body is parsed with orjson, which takes a
    16 KB payload in a third of the time `json.loads` does (bench/README.md).
    """
    signature = headers.get("x-hub-signature-256")
    if not signature:  # the SHA-1 signature alone is not accepted
        raise web.HTTPUnauthorized(text="missing X-Hub-Signature-256")
    try:
        sansio.validate_event(body, signature=signature, secret=secret)
    except ValidationFailure as exc:
        raise web.HTTPUnauthorized(text="signature does not match") from exc
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"malformed delivery: not JSON ({exc})") from exc
    event, delivery_id = headers.get("x-github-event"), headers.get("x-github-delivery")
    if not isinstance(data, dict) or not delivery_id or not event:
        raise web.HTTPBadRequest(text="malformed delivery: expected a JSON object with event and delivery id")
    return sansio.Event(data, event=event, delivery_id=delivery_id)


def create_app(settings: Settings, *, enqueue: Enqueue | None = None) -> web.Application:
    """The receiver. By default a delivery's Celery message goes onto the events queue together with its
    dedupe key (Intake). `enqueue` replaces that push (tests): it runs after the dedupe, and the dedupe key
    is released again if it fails.
    """
    if settings.webhook_secret is None or not settings.webhook_secret.get_secret_value():
        raise ValueError("refusing to start without a webhook secret: set RETRAIN_WEBHOOK_SECRET")
    secret = settings.webhook_secret.get_secret_value()
    ttl = settings.delivery_ttl_s
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    metrics = ReceiverMetrics()
    redis_key = web.AppKey("redis", aioredis.Redis)
    intake_key = web.AppKey("intake", Intake)

    async def open_redis(app: web.Application) -> Any:
        # Short timeouts: with the broker down, GitHub should get a quick 503 (and redeliver later), not a hang.
        app[redis_key] = aioredis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
        app[intake_key] = Intake(app[redis_key], ttl)
        yield
        await app[redis_key].aclose()

    async def accept(request: web.Request, event: sansio.Event, body: bytes) -> bool:
        """True if the delivery is new and now on the queue, False if it was seen before; raises if the
        queue cannot take it, with nothing remembered."""
        key = DELIVERY_KEY.format(event.delivery_id)
        if enqueue is None:
            return await request.app[intake_key].accept(key, event_message(event.event, event.delivery_id, body))
        store = request.app[redis_key]
        if not await store.set(key, "1", nx=True, ex=ttl):
            return False
        try:
            await enqueue(event.event, event.delivery_id, event.data)
        except Exception:
            await store.delete(key)  # let GitHub's redelivery try again
            raise
        return True

    async def webhook(request: web.Request) -> web.Response:
        kind = request.headers.get("x-github-event", "")
        kind = kind if kind in KNOWN_EVENTS else "other"  # bounded label values, whatever is sent
        try:
            # The body is forwarded as is, so it must be the UTF-8 that JSON is (and that GitHub sends).
            if request.content_type != "application/json" or (request.charset or "utf-8").lower() != "utf-8":
                raise web.HTTPUnsupportedMediaType(text="expected content-type application/json in UTF-8")
            body = await request.read()
            event = parse_delivery(request.headers, body, secret)
        except web.HTTPException as exc:  # there is no access log (see serve): say why here
            metrics.deliveries.labels(kind, REFUSED.get(exc.status, f"refused_{exc.status}")).inc()
            log.info("refused delivery %s: %d %s", request.headers.get("x-github-delivery"), exc.status, exc.text)
            raise
        started = time.perf_counter()
        try:
            new = await accept(request, event, body)
        except Exception:
            metrics.deliveries.labels(kind, "unavailable").inc()
            log.exception("could not enqueue delivery %s", event.delivery_id)
            raise web.HTTPServiceUnavailable(text="could not enqueue; redeliver later") from None
        metrics.enqueue_seconds.observe(time.perf_counter() - started)
        if not new:
            metrics.deliveries.labels(kind, "duplicate").inc()
            log.info("duplicate delivery %s ignored", event.delivery_id)
            return web.json_response({"status": "duplicate"}, status=200)
        metrics.deliveries.labels(kind, "accepted").inc()
        log.debug("enqueued %s delivery %s", event.event, event.delivery_id)
        return web.json_response({"status": "accepted", "delivery": event.delivery_id}, status=202)

    async def metrics_page(request: web.Request) -> web.Response:
        """Prometheus text format; the receiver's own series even while Redis is away."""
        try:
            await metrics.shared.refresh(request.app[redis_key], (EVENTS_QUEUE, TRAIN_QUEUE))
        except Exception as exc:
            log.warning("metrics from Redis unavailable: %s", exc)
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(_: web.Request) -> web.Response:
        """The process is up (liveness)."""
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        """Deliveries can be taken now: the broker answers (readiness)."""
        try:
            await request.app[redis_key].ping()
        except Exception as exc:
            return web.json_response({"status": "unavailable", "broker": type(exc).__name__}, status=503)
        return web.json_response({"status": "ready", "broker": "ok"})

    app.cleanup_ctx.append(open_redis)
    app.router.add_post("/webhook", webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app


def serve(settings: Settings, host: str, port: int) -> None:
    app = create_app(settings)
    gc.freeze()  # what is loaded by now lives as long as the process: spare the collector walking it again
    log.info("listening on %s:%d", host, port)
    # No access log: a line per delivery cost ~45 µs of CPU, more than the signature check (bench/README.md).
    # Refusals and failures are logged by the handler; accepted deliveries by the events worker.
    web.run_app(app, host=host, port=port, print=None, access_log=None)


def signature_for(body: bytes, secret: str) -> str:
    """What GitHub puts in X-Hub-Signature-256 (used by tests and the load benchmark)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
