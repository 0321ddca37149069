"""The receiver while its Redis is away: 503 (so GitHub's redelivery can recover the event), `/readyz`
says so, and both recover by themselves when Redis is back. A real redis-server is stopped and started."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import redis
from aiohttp.test_utils import TestClient, TestServer

from app.config.settings import Settings
from app.web.server import create_app, signature_for
from tests.payloads import comment_event
from tests.processes import free_port, redis_server

SECRET = "broker-test-secret"


def test_outage_answers_503_and_recovers_without_a_restart(tmp_path: Path) -> None:
    port = free_port()
    settings = Settings(_env_file=None, webhook_secret=SECRET, redis_url=f"redis://127.0.0.1:{port}/0")
    body = json.dumps(comment_event("/retrain")).encode()

    def headers(delivery: str) -> dict[str, str]:
        return {"content-type": "application/json", "x-github-event": "issue_comment",
                "x-github-delivery": delivery, "x-hub-signature-256": signature_for(body, SECRET)}

    async def scenario() -> list[tuple[str, int]]:
        seen: list[tuple[str, int]] = []
        async with TestClient(TestServer(create_app(settings))) as client:

            async def step(name: str) -> None:
                ready = await client.get("/readyz")
                posted = await client.post("/webhook", data=body, headers=headers(name))
                seen.append((f"{name} readyz", ready.status))
                seen.append((f"{name} webhook", posted.status))

            await step("down")
            with redis_server(port, tmp_path):
                await step("up")
                assert redis.Redis(port=port).llen("events") == 1
                again = await client.post("/webhook", data=body, headers=headers("up"))
                seen.append(("redelivered", again.status))
            await step("down-again")
            with redis_server(port, tmp_path):  # Redis keeps nothing on disk here: it comes back empty
                await step("back")
                await step("down")  # GitHub's redelivery of the delivery refused during the first outage
        return seen

    assert asyncio.run(scenario()) == [
        ("down readyz", 503), ("down webhook", 503),
        ("up readyz", 200), ("up webhook", 202), ("redelivered", 200),
        ("down-again readyz", 503), ("down-again webhook", 503),
        ("back readyz", 200), ("back webhook", 202),
        ("down readyz", 200), ("down webhook", 202),
    ]
