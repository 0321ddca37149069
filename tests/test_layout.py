"""The code's rooms and the way their imports run (docs/architecture.md), as import-linter contracts in
pyproject.toml: they hold on this tree, and each kind of break is caught on a copy of it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


@contextmanager
def added(path: Path, line: str) -> Iterator[None]:
    """`line` appended to the module at `path` (made when missing) for the duration; the copy is whole after."""
    original = path.read_text() if path.exists() else None
    path.write_text((original or "") + f"\n{line}  # added by tests/test_layout.py\n")
    try:
        yield
    finally:
        if original is None:
            path.unlink()
        else:
            path.write_text(original)


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Runs the contracts against the packages in `tree` (found first on the path), with no cache."""
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "200"}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_hold() -> None:
    assert LINT_IMPORTS.exists(), "import-linter is not installed: scripts/bootstrap installs the dev extra"
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout and "Contracts: 10 kept, 0 broken." in done.stdout, done.stdout


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
    ("app/trivia.py", "import app.cli", "app/'s rooms import downward"),  # a module not given its place
    ("app/web/server.py", "from app.github.client import GitHubClient", "the receiver never calls GitHub"),
    ("workers/jobs/events.py", "from app.web.server import create_app", "workers/ import app/'s shared rooms"),
    ("workers/session/store.py", "import redis", "a session is the same for workers and local mode"),
]


@pytest.mark.parametrize(("module", "line", "contract"), BREAKS, ids=[f"{m}:{c[:24]}" for m, _, c in BREAKS])
def test_a_broken_rule_is_caught(tree: Path, module: str, line: str, contract: str) -> None:
    with added(tree / module, line):
        done = lint_imports(tree)
    assert done.returncode == 1, done.stdout + done.stderr
    report = " ".join(done.stdout.split())  # import-linter wraps long contract names
    assert "Broken contracts" in report, done.stdout
    assert contract in report.split("Broken contracts", 1)[1], done.stdout


CYCLES = """
import json, grimp
graph = grimp.build_graph("app", "workers")
print(json.dumps(sorted({tuple(sorted((a, b))) for a in graph.modules
                         for b in graph.find_modules_directly_imported_by(a)
                         if graph.chain_exists(importer=b, imported=a)})))
"""


def module_cycles(tree: Path) -> list[list[str]]:
    """Pairs of modules that reach each other, imports inside functions and a package's own `__init__`
    included (which import-linter's sibling check leaves out: a planner importing `app.features` would be
    a cycle that breaks at import time)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", CYCLES], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout)


def test_no_module_imports_one_that_imports_it_back(tree: Path) -> None:
    assert module_cycles(ROOT) == []
    with added(tree / "app/features/retrain_command.py", "from app.features import PLANNERS"):
        assert ["app.features", "app.features.retrain_command"] in module_cycles(tree)
