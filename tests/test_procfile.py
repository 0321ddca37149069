"""The Procfile as an operator runs it: `honcho start` brings up web, events, worker and beat against a
Redis; a `/retrain` comment posted to web becomes a committed session; Ctrl-C stops all four cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import APP_ID, REPO
from tests.payloads import comment_event
from tests.processes import ROOT, answers_ok, free_port, wait_until
from tests.services import SECRET, post

PROCESSES = ("web", "events", "worker", "beat")


def test_honcho_runs_the_procfile_through_a_whole_session(github, redis_url, clean_redis, app_key_pair,
                                                          tmp_path: Path) -> None:
    emu, github_url = github
    key = tmp_path / "app.pem"
    key.write_bytes(app_key_pair[0])
    env_file = tmp_path / "retrain.env"  # what `retrain register` writes, plus where things are
    env_file.write_text(
        f"RETRAIN_APP_ID={APP_ID}\nRETRAIN_PRIVATE_KEY_PATH={key}\nRETRAIN_WEBHOOK_SECRET={SECRET}\n"
        f"RETRAIN_REDIS_URL={redis_url}\nRETRAIN_GITHUB_API_URL={github_url}\n"
        f"RETRAIN_STORE_URL=file://{tmp_path / 'store'}\nPYTHONUNBUFFERED=1\n"
    )
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)  # where `retrain`, `celery` and `honcho` are installed
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    log = tmp_path / "honcho.log"
    with log.open("wb") as out:
        honcho = subprocess.Popen([f"{bin_dir}/honcho", "start", "--no-colour", "-e", str(env_file), "-p", str(port)],
                                  cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        web = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers_ok(f"{web}/readyz", honcho, log), 60, "web's /readyz", log)
        wait_until(lambda: log.read_text().count(" ready.") >= 2, 90, "both celery workers", log)
        payload = comment_event("/retrain ci max_iters=20", sender="alice", repo=REPO, installation_id=42,
                                comment_id=1201, github=emu)
        assert post(web, payload, delivery="honcho-1") == 202
        wait_until(lambda: [c for c in emu.check_runs(REPO) if c["status"] == "completed"], 240,
                   "the session's check run to complete", log)
        summary = json.loads(emu.read_file(REPO, ".training-progress/nanecho-cached-ci/training_summary.json"))
        assert summary["session"]["end_iteration"] == 20
        text = log.read_text()
        for name in PROCESSES:
            assert f"{name}.1 started" in text, f"{name} did not start"
        assert "beat: Starting" in text
    finally:
        honcho.send_signal(signal.SIGINT)  # Ctrl-C: honcho stops every process
        try:
            code = honcho.wait(timeout=60)
        except subprocess.TimeoutExpired:
            honcho.kill()
            raise
    text = log.read_text()
    assert code in (0, 130), text[-3000:]
    for name in PROCESSES:
        assert f"{name}.1 stopped" in text or f"{name}.1 exited" in text, f"{name} did not stop\n{text[-3000:]}"
