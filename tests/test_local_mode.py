"""The README's local mode, run as a user runs it: `retrain train` twice on a fresh git repository."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from tests.processes import ROOT
from tests.repos import git, make_local_repo

RUN_DIR = ".training-progress/nanecho-cached-ci"


def retrain(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_DATA_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def summary_at(repo: Path, rev: str) -> dict:
    return json.loads(git(repo, "show", f"{rev}:{RUN_DIR}/training_summary.json"))


def test_two_local_sessions_commit_twice_and_the_second_resumes(tmp_path: Path) -> None:
    repo = make_local_repo(tmp_path / "repo")
    store = f"file://{tmp_path / 'store'}"
    first = retrain("train", "--repo", str(repo), "--profile", "ci", "--max-iters", "30", "--store", store,
                    home=tmp_path)
    assert "started from a fresh model" in first.stdout
    second = retrain("train", "--repo", str(repo), "--max-iters", "20", "--store", store, home=tmp_path)

    log = git(repo, "log", "--format=%an|%s").splitlines()
    assert len(log) == 3 and log[-1] == "retrain|corpus"
    assert all(line.startswith("retrain|retrain(ci): +") for line in log[:2])
    s1, s2 = summary_at(repo, "HEAD~1")["session"], summary_at(repo, "HEAD")["session"]
    assert (s1["start_iteration"], s1["end_iteration"]) == (0, 30)
    assert (s2["start_iteration"], s2["end_iteration"]) == (30, 50)
    assert s2["resumed_from"] == s1["checkpoint_id"]
    assert f"resumed from {s1['checkpoint_id']}" in second.stdout
    # The second session starts from the weights the first committed, not from a fresh model (≈ ln 256 =
    # 5.55): evaluated on the same validation set, they score what they scored when the first ended. (One
    # batch's training loss is no measure: a loss spike at the boundary, which one uninterrupted run would
    # have as well, once put 1.16 nats between the first session's last batch and the second's first.)
    assert s2["validation_set"] == s1["validation_set"]
    assert abs(s2["val_loss_before"] - s1["val_loss_after"]) < 1e-4, (s1, s2)
    assert s2["val_loss_before"] < math.log(256) - 1.5
    metadata = json.loads(git(repo, "show", f"HEAD:{RUN_DIR}/cache/metadata.json"))
    assert set(metadata) == {s1["checkpoint_id"], s2["checkpoint_id"]}
    assert metadata[s2["checkpoint_id"]]["parent_checkpoint"] == s1["checkpoint_id"]
    # The checkout followed the commits, and nothing in it is left modified.
    assert git(repo, "status", "--porcelain") == ""
    assert (repo / RUN_DIR / "cache/metadata.json").exists()


def test_demo_learns_across_three_sessions_and_beats_the_unigram_baseline(tmp_path: Path) -> None:
    """The README's first command, three times, with the demo's own `ci` profile (no overrides).

    Template text is easy: any model trained for a session beats the unigram baseline and improves on
    a smaller one, so those facts alone prove nothing about continuing. The control does: a fresh model
    given one session's compute on the same final text must end clearly worse than the third session,
    which continued two earlier ones; were the resume broken, the two would be the same."""
    demo_dir = tmp_path / "demo"
    outputs = [retrain("demo", "--dir", str(demo_dir), home=tmp_path).stdout for _ in range(3)]
    assert "started from a fresh model" in outputs[0]
    assert all("resumed from ckpt_" in out for out in outputs[1:])
    # A second run edits the repository first, as a living one changes between sessions.
    assert all("edited the demo repository first: added notes/" in out for out in outputs[1:])
    repo = demo_dir / "repo"
    log = git(repo, "log", "--format=%H %s").splitlines()
    assert [line.split(" ", 1)[1].split(":")[0] for line in log] == [
        "retrain(ci)", "Demo", "retrain(ci)", "Demo", "retrain(ci)", "Demo corpus and config"]
    sessions = [summary_at(repo, line.split()[0])["session"] for line in reversed(log) if "retrain(ci)" in line]
    assert all("training data (its text or its split) changed" in " ".join(s["notes"]) for s in sessions[1:])
    bpb = [s["val_bpb_after"] for s in sessions]
    assert bpb[0] > bpb[1] > bpb[2], bpb
    baseline = sessions[-1]["unigram_val_bpb"]
    assert bpb[-1] < 0.6 * baseline, (bpb, baseline)
    assert f"unigram baseline {baseline:.4f} bits per byte" in outputs[-1]
    assert all(abs(s["first_loss"] - prev["last_loss"]) < 0.5 for prev, s in itertools.pairwise(sessions)), \
        "each session starts near where the one before ended, not from a fresh model"

    retrain("train", "--repo", str(repo), "--profile", "ci", "--fresh", "--store",
            f"file://{demo_dir / 'checkpoints'}", home=tmp_path)
    control = summary_at(repo, "HEAD")["session"]
    assert control["start_iteration"] == 0 and control["end_iteration"] == sessions[-1]["end_iteration"] // 3
    print(f"demo val bpb by session {bpb}; a fresh model with one session's compute: {control['val_bpb_after']}")
    assert bpb[-1] < 0.6 * control["val_bpb_after"], (bpb, control["val_bpb_after"])


def test_a_directory_that_is_not_a_repository_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "app.cli", "train", "--repo", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "not a git working tree" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_refuses_to_start_without_a_webhook_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RETRAIN_WEBHOOK_SECRET"}
    proc = subprocess.run([sys.executable, "-m", "app.cli", "serve", "--port", "0"], cwd=tmp_path,
                          env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "refusing to start without a webhook secret" in proc.stderr
