"""A two-process session through the whole product (receiver, real Celery workers, Redis, the GitHub emulator):
one of its training processes is killed part way; the train task sends the session again, it goes on from its
in-session checkpoint, and exactly one commit lands, recording that two processes trained it."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from tests.conftest import REPO
from tests.payloads import comment_event
from tests.processes import pool_children, wait_until
from tests.repos import set_ci_profile
from tests.services import post, retrain_services
from tests.test_distributed import rank_processes

RUN_DIR = ".training-progress/nanecho-cached-ci"


def test_a_killed_rank_costs_a_two_process_session_nothing_but_time(
    github, tmp_path: Path, redis_url: str, clean_redis, app_key_pair
) -> None:
    emu, url = github
    # An in-session checkpoint at every report (every 10 iterations); long enough that the kill, soon after the
    # first one, lands mid-training even on a busy machine.
    set_ci_profile(emu, max_iters=1500, checkpoint_every_s=1e-9)
    inflight = tmp_path / "store" / REPO / "nanecho-cached-ci" / "inflight"
    with retrain_services(tmp_path, url, redis_url, app_key_pair[0], RETRAIN_NPROC_PER_NODE="2",
                          RETRAIN_BUSY_RETRY_S="1") as running:
        log = running.train_log
        event = comment_event("/retrain ci", sender="alice", repo=REPO, installation_id=42, comment_id=901, github=emu)
        assert post(running.web, event, delivery="delivery-ddp") == 202
        def ranks() -> dict[int, int]:  # the ranks of this train worker's sessions, not another test run's
            return rank_processes(set(pool_children(running.train)))

        wait_until(lambda: set(ranks()) == {0, 1} and inflight.is_dir() and any(inflight.iterdir()),
                   240, "two ranks training and an in-session checkpoint", log)
        os.kill(ranks()[1], signal.SIGKILL)
        wait_until(lambda: "TrainingProcessLost" in log.read_text(errors="replace"), 60,
                   "the train task handing the session back (a kill that came after training ended proves nothing)",
                   log)
        commits = lambda: [c for c in emu.git_log(REPO) if c["message"].startswith("retrain(")]  # noqa: E731
        wait_until(lambda: len(commits()) == 1, 300, "the session's commit after the lost rank", log)
        worker_log = log.read_text(errors="replace")
        assert ranks() == {}

    summary = json.loads(emu.read_file(REPO, f"{RUN_DIR}/training_summary.json", ref=commits()[0]["oid"]))["session"]
    assert summary["world_size"] == 2 and (summary["start_iteration"], summary["end_iteration"]) == (0, 1500)
    assert any("resumed this session's own in-session checkpoint" in note for note in summary["notes"]), summary
    assert "ended unexpectedly" in worker_log and "Retry in 1.0s: TrainingProcessLost" in worker_log
    check_runs = emu.check_runs(REPO)
    assert [r["conclusion"] for r in check_runs] == ["success"], check_runs
