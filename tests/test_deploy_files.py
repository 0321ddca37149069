"""scripts/check-deploy (run by .ci/run) accepts the shipped compose file, Kubernetes manifests, App
manifest and Dockerfiles, and refuses broken copies of them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def check(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / "scripts/check-deploy"), str(directory)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_the_shipped_files_pass() -> None:
    done = check(ROOT / "deploy")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("path", "old", "new"), [
    ("compose.yaml", "stop_grace_period", "stop_grace_perod"),
    ("k8s/web.yaml", "replicas:", "replica:"),
    ("k8s/worker.yaml", "apiVersion: apps/v1", "apiVersion: apps/v9"),
    ("Dockerfile", "USER ", "# USER "),
])
def test_a_broken_copy_fails(tmp_path: Path, path: str, old: str, new: str) -> None:
    copy = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy", copy)
    text = (copy / path).read_text()
    assert old in text
    (copy / path).write_text(text.replace(old, new, 1))
    done = check(copy)
    assert done.returncode != 0, f"{path} with {new!r} passed:\n{done.stdout}{done.stderr}"
