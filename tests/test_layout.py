"""The code's rooms and the way their imports run (docs/architecture.md), as import-linter contracts in
pyproject.toml: they hold on this tree, and each kind of break is caught on a copy of it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Runs the contracts against the packages in `tree` (found first on the path), with no cache."""
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "200"}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_hold() -> None:
    assert LINT_IMPORTS.exists(), "import-linter is not installed: scripts/bootstrap installs the dev extra"
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout and "Contracts: 7 kept, 0 broken." in done.stdout, done.stdout


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("layout")
    for package in ("app", "workers"):
        shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


BREAKS = [  # (module, the import added to it, the contract that must break)
    ("app/web/server.py", "from workers.celery_app import celery_app",
     "app/ never imports workers/, except the operator's CLI"),
    ("app/features/commands.py", "from app.writing.replies import quoted", "app/'s rooms import downward"),
    ("app/writing/replies.py", "from app.github.client import GitHubClient",
     "the pure core (config, planners, texts, names) does no I/O"),
    ("app/config/globs.py", "import torch", "the pure core (config, planners, texts, names) does no I/O"),
    ("workers/session/plan.py", "from workers.coordination.run_lock import RunLocks",
     "workers/' rooms import downward"),
    ("workers/coordination/live.py", "from workers.trainer.model import GPT",
     "the receiver, the GitHub client and coordination load no torch"),
    ("workers/trainer/data.py", "from app.config.settings import Settings", "the trainer is plain PyTorch"),
    ("app/config/globs.py", "from app.config.settings import Settings", "no import cycles"),
]


@pytest.mark.parametrize(("module", "line", "contract"), BREAKS, ids=[f"{m}:{c[:24]}" for m, _, c in BREAKS])
def test_a_broken_rule_is_caught(tree: Path, module: str, line: str, contract: str) -> None:
    path = tree / module
    original = path.read_text()
    path.write_text(original + f"\n{line}  # added by tests/test_layout.py\n")
    try:
        done = lint_imports(tree)
    finally:
        path.write_text(original)
    assert done.returncode == 1, done.stdout + done.stderr
    report = " ".join(done.stdout.split())  # import-linter wraps long contract names
    assert "Broken contracts" in report, done.stdout
    assert contract in report.split("Broken contracts", 1)[1], done.stdout
