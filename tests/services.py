"""Retrain's processes as the Procfile runs them (receiver, events worker, train worker), started for a test
against the GitHub emulator and a real Redis, and the signed deliveries a test posts to them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

from app.web.server import signature_for
from tests.conftest import APP_ID
from tests.processes import celery_worker, receiver

SECRET = "e2e-webhook-secret"


@dataclass
class Services:
    web: str
    events: Popen
    train: Popen
    train_log: Path
    events_log: Path
    env: dict[str, str]


@contextmanager
def retrain_services(tmp_path: Path, github_url: str, redis_url: str, private_pem: bytes,
                     **extra_env: str) -> Iterator[Services]:
    key_path = tmp_path / "app.pem"
    key_path.write_bytes(private_pem)
    env = {
        "RETRAIN_APP_ID": APP_ID, "RETRAIN_PRIVATE_KEY_PATH": str(key_path), "RETRAIN_WEBHOOK_SECRET": SECRET,
        "REDIS_URL": redis_url, "RETRAIN_REDIS_URL": redis_url, "RETRAIN_GITHUB_API_URL": github_url,
        "RETRAIN_STORE_URL": f"file://{tmp_path / 'store'}", "PYTHONUNBUFFERED": "1", **extra_env,
    }
    with ExitStack() as stack:
        events = stack.enter_context(celery_worker(env, tmp_path / "events.log", queues="events"))
        train = stack.enter_context(celery_worker(env, tmp_path / "worker.log", queues="train"))
        web = stack.enter_context(receiver(env, tmp_path / "web.log"))
        yield Services(web, events, train, tmp_path / "worker.log", tmp_path / "events.log", env)


def post(web: str, payload: dict | bytes, *, delivery: str, secret: str | None = SECRET,
         event: str = "issue_comment") -> int:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"content-type": "application/json", "x-github-event": event, "x-github-delivery": delivery}
    if secret is not None:
        headers["x-hub-signature-256"] = signature_for(body, secret)
    request = urllib.request.Request(f"{web}/webhook", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
