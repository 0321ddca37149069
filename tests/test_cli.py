"""The operator's commands `retrain config check` and `retrain status`, run in-process through `main`
(status against a real Redis: the database RETRAIN_TEST_REDIS_DB)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import redis

from app.cli import main
from workers.coordination.live import LiveSession, LiveSessions


@pytest.fixture(autouse=True)
def _no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read `.env` from the working directory: use an empty one."""
    monkeypatch.chdir(tmp_path)
    for name in ("RETRAIN_REDIS_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "retrain.yml"
    path.write_text(text)
    return str(path)


# --- config check ---------------------------------------------------------------------------------------------
def test_config_check_accepts_a_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path, """
data:
  include: ["echoself.md", "echo/**/*.md"]
profiles:
  ci: {max_iters: 50}
  tiny: {n_layer: 2, n_head: 2, n_embd: 64, block_size: 64}
retention: {max_checkpoints: 5}
schedule:
  - {cron: "0 3 * * *", profile: tiny}
""")
    assert main(["config", "check", path]) == 0
    out = capsys.readouterr().out.strip()
    assert out == ("ok: 4 profiles (ci, scheduled, full, tiny), data include echoself.md, echo/**/*.md, "
                   "retention max_checkpoints=5, permission write, schedule 1 entries")


def test_config_check_of_an_empty_file_gives_the_defaults(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", _config(tmp_path, "")]) == 0
    assert capsys.readouterr().out.startswith("ok: 3 profiles (ci, scheduled, full), data include **/*.md, **/*.txt")


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("profiles: {ci: {max_iters: 10}}\nretension: {max_checkpoints: 3}\n",
                 "retension: Extra inputs are not permitted", id="unknown-key"),
    pytest.param("profiles: {ci: [unclosed\n", "is not valid YAML", id="bad-yaml"),
    pytest.param("profiles: {ci: {n_layer: 0}}\n", "profiles.ci.n_layer: Input should be greater than or equal to 1",
                 id="bad-profile-value"),
    pytest.param("profiles: {ci: {max_iter: 10}}\n", "profiles.ci.max_iter: Extra inputs are not permitted",
                 id="unknown-profile-key"),
    pytest.param("- just\n- a list\n", "must be a mapping at the top level", id="not-a-mapping"),
    pytest.param('run_prefix: "../../victim/repo/x-"\n', "run_prefix: '../../victim/repo/x-' is not a valid run_prefix",
                 id="run-prefix-climbs-out"),
    pytest.param("profiles: {ci: {n_head: 3}}\n", "profiles.ci: n_head (3) must divide n_embd (256)",
                 id="heads-do-not-divide-width"),
])
def test_config_check_reports_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                            message: str) -> None:
    path = _config(tmp_path, text)
    assert main(["config", "check", path]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(f"retrain: {path}")
    assert message in captured.err


def test_config_check_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(tmp_path / "nope.yml")]) == 2
    assert "cannot read" in capsys.readouterr().err


# --- status ---------------------------------------------------------------------------------------------------
def _session(session_id: str, status: str, **kw: object) -> LiveSession:
    return LiveSession(session_id=session_id, profile=str(kw.pop("profile", "ci")), status=status,
                       trigger=str(kw.pop("trigger", "comment")), **kw)  # type: ignore[arg-type]


def test_status_lists_queued_and_running_sessions_of_every_repository(
        redis_url: str, clean_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RETRAIN_REDIS_URL", redis_url)
    live = LiveSessions(clean_redis)
    live.put("octo/demo", _session("a1b2c3d4e5f6", "running", sender="alice", iteration=1200, session_iteration=200,
                                   max_iters=500, loss=1.23456, eta_s=95.0))
    live.put("octo/demo", _session("99887766aabb", "queued", profile="full", sender="bob"))
    live.put("other/repo", _session("0011223344", "queued", profile="scheduled", trigger="schedule"))
    clean_redis.set("retrain:lock:octo/demo:run", "x")  # other keys are not sessions

    assert main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["REPO", "SESSION", "PROFILE", "STATUS", "ITERATION", "LOSS", "ETA", "REQUESTED",
                                "BY", "UPDATED"]
    assert lines[1].split() == ["octo/demo", "a1b2c3d4", "ci", "running", "1200", "(200/500)", "1.2346", "95s",
                                "@alice", "0s", "ago"]
    assert lines[2].split() == ["octo/demo", "99887766", "full", "queued", "–", "–", "–", "@bob", "0s", "ago"]
    assert lines[3].split() == ["other/repo", "00112233", "scheduled", "queued", "–", "–", "–", "schedule", "0s",
                                "ago"]
    assert len(lines) == 4

    assert main(["status", "--repo", "other/repo", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["repo"], r["session_id"], r["status"], r["trigger"]) for r in records] == [
        ("other/repo", "0011223344", "queued", "schedule")]

    assert main(["status", "--json"]) == 0
    assert [r["session_id"] for r in json.loads(capsys.readouterr().out)] == [
        "a1b2c3d4e5f6", "99887766aabb", "0011223344"]


def test_status_with_nothing_queued(redis_url: str, clean_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RETRAIN_REDIS_URL", redis_url)
    assert main(["status"]) == 0
    assert capsys.readouterr().out.strip() == "no sessions queued or running"
    assert main(["status", "--repo", "octo/demo"]) == 0
    assert capsys.readouterr().out.strip() == "no sessions queued or running in octo/demo"
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_status_when_redis_is_unreachable(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RETRAIN_REDIS_URL", f"redis://:hunter2@127.0.0.1:{port}/0")
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"retrain: cannot read sessions from Redis at redis://:***@127.0.0.1:{port}/0")
    assert "RETRAIN_REDIS_URL" in err and "hunter2" not in err
