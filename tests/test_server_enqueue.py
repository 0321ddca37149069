"""The receiver's own enqueue: the Celery message it builds and pushes with the dedupe key in one Redis script.

It must be a message Celery cannot tell from one `send_task` sends, so kombu decodes both here, and a real
worker process runs the events task from it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path
from typing import Any

import redis
from aiohttp.test_utils import TestClient, TestServer

from app.config.settings import Settings
from app.queues import EVENTS_QUEUE, EVENTS_TASK
from app.web.server import DELIVERY_KEY, celery_message, create_app, event_message, signature_for
from tests.payloads import comment_event
from tests.processes import celery_worker, wait_until
from workers.celery_app import create_celery

SECRET = "It's a Secret to Everybody"
# A real-size payload (GitHub's example when the shared fixtures are there) for an event the worker ignores.
BODY = json.dumps(comment_event("thanks, looks good")).encode()


def post_all(redis_url: str, deliveries: list[tuple[str, bytes, dict[str, str]]]) -> list[int]:
    """POST each (delivery id, body, extra headers) to a receiver with its default enqueue; the statuses."""

    async def main() -> list[int]:
        app = create_app(Settings(webhook_secret=SECRET, redis_url=redis_url, _env_file=None))
        statuses = []
        async with TestClient(TestServer(app)) as client:
            for delivery, body, extra in deliveries:
                headers = {"content-type": "application/json", "x-github-event": "issue_comment",
                           "x-github-delivery": delivery, "x-hub-signature-256": signature_for(body, SECRET), **extra}
                statuses.append((await client.post("/webhook", data=body, headers=headers)).status)
        return statuses

    return asyncio.run(main())


def post(redis_url: str, delivery: str, body: bytes = BODY, **headers: str) -> int:
    return post_all(redis_url, [(delivery, body, headers)])[0]


def consume(redis_url: str, count: int) -> list[tuple[Any, dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(decoded body, headers, delivery_info, properties) of `count` messages off the events queue, as a
    Celery worker's kombu consumer takes them."""
    app = create_celery(Settings(redis_url=redis_url, _env_file=None))
    got: list[tuple[Any, dict[str, Any], dict[str, Any], dict[str, Any]]] = []

    def on_message(body: Any, message: Any) -> None:
        got.append((body, message.headers, message.delivery_info, message.properties))
        message.ack()

    with (
        app.connection_for_read() as conn,
        conn.Consumer(queues=[app.amqp.queues[EVENTS_QUEUE]], callbacks=[on_message], accept=["json"]),
    ):
        while len(got) < count:
            conn.drain_events(timeout=5)
    return got


def test_the_message_decodes_as_the_one_send_task_sends(redis_url: str, clean_redis: redis.Redis) -> None:
    assert post(redis_url, "d-ours") == 202
    assert clean_redis.llen(EVENTS_QUEUE) == 1  # the list kombu's Redis transport keeps the queue in
    sender = create_celery(Settings(redis_url=redis_url, _env_file=None))
    sender.send_task(EVENTS_TASK, args=("issue_comment", "d-ours", json.loads(BODY)), queue=EVENTS_QUEUE)
    assert clean_redis.llen(EVENTS_QUEUE) == 2

    (ours, our_headers, our_info, our_props), (theirs, their_headers, their_info, their_props) = consume(redis_url, 2)
    assert ours == theirs  # ([event, delivery id, payload], kwargs, embed): the payload parses the same
    assert ours[0][2] == json.loads(BODY) and ours[1] == {}
    assert our_headers["task"] == their_headers["task"] == EVENTS_TASK
    assert set(our_headers) == set(their_headers)
    for same in ("lang", "retries", "eta", "expires", "group", "parent_id", "timelimit", "kwargsrepr"):
        assert our_headers[same] == their_headers[same], same
    assert our_headers["root_id"] == our_headers["id"] == our_props["correlation_id"]
    assert our_headers["argsrepr"] == f"('issue_comment', 'd-ours', <payload: {len(BODY)} bytes>)"
    assert our_info["routing_key"] == their_info["routing_key"] == EVENTS_QUEUE
    assert our_info["exchange"] == their_info["exchange"]
    for same in ("priority", "delivery_mode", "body_encoding"):
        assert our_props[same] == their_props[same], same


def test_the_message_is_plain_json_with_the_payload_spliced_in() -> None:
    task_id = str(uuid.uuid4())
    raw = celery_message("some.task", b'[1, {"a": "\\u00e9"}]', queue="q", argsrepr="(1, ...)", task_id=task_id)
    message = json.loads(raw)
    assert message["headers"]["id"] == message["properties"]["delivery_tag"] == task_id
    assert message["properties"]["delivery_info"] == {"exchange": "", "routing_key": "q"}
    body = json.loads(base64.b64decode(message["body"]))
    assert body == [[1, {"a": "é"}], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    # Every message gets its own id, so kombu's acks (by delivery tag) never mix two up.
    first, second = (json.loads(event_message("ping", "d", b"{}")) for _ in range(2))
    assert first["headers"]["id"] != second["headers"]["id"]


def test_a_redelivery_is_not_enqueued_again(redis_url: str, clean_redis: redis.Redis) -> None:
    assert post_all(redis_url, [("d-1", BODY, {}), ("d-1", BODY, {})]) == [202, 200]
    assert clean_redis.llen(EVENTS_QUEUE) == 1
    assert clean_redis.ttl(DELIVERY_KEY.format("d-1")) > 0


def test_concurrent_deliveries_share_round_trips_and_each_is_enqueued_once(
    redis_url: str, clean_redis: redis.Redis
) -> None:
    """40 requests at once, each delivery sent twice: the two copies may meet in one pipeline."""
    deliveries = [f"c-{i}" for i in range(20)]

    async def main() -> list[int]:
        app = create_app(Settings(webhook_secret=SECRET, redis_url=redis_url, _env_file=None))
        async with TestClient(TestServer(app)) as client:
            headers = {"content-type": "application/json", "x-github-event": "issue_comment",
                       "x-hub-signature-256": signature_for(BODY, SECRET)}
            posts = [client.post("/webhook", data=BODY, headers={**headers, "x-github-delivery": d})
                     for d in deliveries * 2]
            return [r.status for r in await asyncio.gather(*posts)]

    statuses = asyncio.run(main())
    assert sorted(statuses) == [200] * 20 + [202] * 20
    messages = [json.loads(raw) for raw in clean_redis.lrange(EVENTS_QUEUE, 0, -1)]
    ids = [json.loads(base64.b64decode(m["body"]))[0][1] for m in messages]
    assert sorted(ids) == sorted(deliveries)


def test_when_the_queue_refuses_nothing_is_remembered_and_a_redelivery_succeeds(
    redis_url: str, clean_redis: redis.Redis
) -> None:
    clean_redis.set(EVENTS_QUEUE, "not a list")  # LPUSH fails with WRONGTYPE inside the script
    assert post(redis_url, "d-2") == 503
    assert not clean_redis.exists(DELIVERY_KEY.format("d-2"))
    clean_redis.delete(EVENTS_QUEUE)
    assert post(redis_url, "d-2") == 202
    assert clean_redis.llen(EVENTS_QUEUE) == 1


def test_a_body_in_another_charset_is_refused(redis_url: str, clean_redis: redis.Redis) -> None:
    """The body is forwarded as is, so it must be the UTF-8 that JSON is; GitHub sends nothing else."""
    body = json.dumps({"zen": "é"}, ensure_ascii=False).encode("latin-1")
    assert post(redis_url, "d-3", body, **{"content-type": "application/json; charset=latin-1"}) == 415
    assert post(redis_url, "d-4", BODY, **{"content-type": "application/json; charset=UTF-8"}) == 202
    assert clean_redis.llen(EVENTS_QUEUE) == 1


def test_a_real_worker_runs_the_events_task_from_the_receivers_message(
    redis_url: str, clean_redis: redis.Redis, tmp_path: Path
) -> None:
    log = tmp_path / "events.log"
    env = {"REDIS_URL": redis_url, "RETRAIN_REDIS_URL": redis_url, "RETRAIN_WEBHOOK_SECRET": SECRET,
           "PYTHONUNBUFFERED": "1"}
    delivery = f"d-{uuid.uuid4()}"
    with celery_worker(env, log, queues=EVENTS_QUEUE):
        assert post(redis_url, delivery) == 202
        line = f"delivery {delivery} (issue_comment): ignored"
        wait_until(lambda: line in log.read_text(), 60, "the events task to log the ignored delivery", log)
    assert clean_redis.llen(EVENTS_QUEUE) == 0

