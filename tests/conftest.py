"""Shared fixtures: real Redis, the App's key pair, GitHub's real material when present."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import torch

from app.config.settings import Settings
from tests.emulator import GitHubEmulator
from tests.emulator.client import AppKey
from tests.repos import repo_files

# A database of its own, flushed by the tests that use it; two runs at once on one machine need two numbers.
TEST_REDIS_DB = int(os.environ.get("RETRAIN_TEST_REDIS_DB", "13"))
REPO = "octo/demo"
APP_ID = "4242"
INSTALLATION_ID = 42


def fixtures_dir() -> Path | None:
    """`../shared/fixtures` through RETRAIN_FIXTURES (set by .ci/run); None on a clone without it."""
    value = os.environ.get("RETRAIN_FIXTURES")
    if value and Path(value).is_dir():
        return Path(value)
    return None


def pytest_report_header(config: pytest.Config) -> list[str]:
    found = fixtures_dir()
    lines = [f"retrain: GitHub fixtures from {found}: payload, schema and OpenAPI conformance checks ON" if found
             else "retrain: RETRAIN_FIXTURES not set: conformance checks against GitHub's real material are OFF"]
    if not torch.cuda.is_available():
        lines.append("retrain: NO GPU here: the CUDA tests (tests/cuda) are NOT collected; scripts/gpu-check runs "
                     "them, and the GPU benchmark, on a machine with one")
    return lines


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The CUDA tests need a GPU; without one they are left out, loudly (the header above), never skipped."""
    if collection_path.name == "cuda" and collection_path.parent == Path(__file__).parent:
        return not torch.cuda.is_available()
    return None


@pytest.fixture(scope="session")
def redis_url() -> str:
    base = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    url = base.rsplit("/", 1)[0] + f"/{TEST_REDIS_DB}" if base.count("/") >= 3 else f"{base}/{TEST_REDIS_DB}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"no Redis answers at {url} ({exc}); run the tests with scripts/test, which starts one")
    return url


@pytest.fixture
def clean_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def app_key_pair() -> tuple[bytes, bytes]:
    """(private PEM, public PEM) of a throwaway GitHub App."""
    key = AppKey.generate()
    return key.private_pem, key.public_pem


@pytest.fixture
def settings(github: tuple[GitHubEmulator, str], tmp_path: Path, app_key_pair: tuple[bytes, bytes],
             redis_url: str, clean_redis: redis.Redis) -> Settings:
    """Settings of an App installed on the emulated REPO, with a store of its own and an empty Redis
    database (sessions' queue slots and leases live there)."""
    key = tmp_path / "app.pem"
    key.write_bytes(app_key_pair[0])
    return Settings(_env_file=None, app_id=APP_ID, private_key_path=key, github_api_url=github[1],
                    github_uploads_url=github[0].uploads_url, store_url=f"file://{tmp_path / 'store'}",
                    redis_url=redis_url)


@pytest.fixture
def github(tmp_path: Path, app_key_pair: tuple[bytes, bytes]) -> Iterator[tuple[GitHubEmulator, str]]:
    """The GitHub emulator serving REPO (the demo corpus, a tiny `ci` profile) on a local port.

    alice may write, bob may only read. Any `git push` into the repository would trip a hook, so a test
    that passes has committed only through the API. It is strict about the REST API version: a call that
    does not name it is a violation.
    """
    root = fixtures_dir()
    emu = GitHubEmulator(
        app_id=APP_ID, app_public_key_pem=app_key_pair[1], root=tmp_path / "github",
        openapi_path=root / "github/openapi/api.github.com.json" if root else None,
        graphql_schema_path=root / "github/graphql/schema.graphql" if root else None,
    )
    git_dir = emu.add_repository(REPO, files=repo_files(), default_branch="main", installation_id=INSTALLATION_ID)
    hook = Path(git_dir) / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\ntouch {tmp_path / 'PUSHED'}\nexit 1\n")
    hook.chmod(0o755)
    emu.set_permission(REPO, "alice", "write")
    emu.set_permission(REPO, "bob", "read")
    emu.require_api_version = True
    with emu.running_in_thread() as base_url:
        yield emu, base_url
    assert not (tmp_path / "PUSHED").exists(), "something ran git push into the emulated repository"
    assert emu.violations == [], emu.violations


FAULT_OUTCOMES: list[str] = []
HOSTILE_OUTCOMES: list[str] = []


def _reporter(tag: str, lines: list[str]):
    def report(what: str, outcome: str) -> None:
        line = f"{what} → {outcome}"
        lines.append(line)
        print(f"{tag} {line}")

    return report


@pytest.fixture
def fault_report():
    """`report(fault, outcome)`: one line per injected fault, printed at the end of the run."""
    return _reporter("FAULT", FAULT_OUTCOMES)


@pytest.fixture
def hostile_report():
    """`report(input, outcome)`: one line per hostile input a repository can write, printed at the end."""
    return _reporter("HOSTILE", HOSTILE_OUTCOMES)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not torch.cuda.is_available():
        terminalreporter.section("CUDA tests NOT RUN")
        terminalreporter.write_line("no GPU on this machine: tests/cuda were not collected; run scripts/gpu-check on "
                                    "a machine with one (README: GPU figures)")
    for title, lines in (("fault injection: each fault and its outcome", FAULT_OUTCOMES),
                         ("hostile repository: each input and its outcome", HOSTILE_OUTCOMES)):
        if lines:
            terminalreporter.section(title)
            for line in lines:
                terminalreporter.write_line(line)
