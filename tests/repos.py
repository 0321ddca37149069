"""A small trained-repository layout for tests: the demo corpus and a tiny, fast profile."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from workers.demo import corpus
from workers.session.repos import BOT_IDENTITY

# Bytes, so that the tests about sessions, faults and reports stay small and fast; the default tokenizer
# (auto: BPE for a new lineage) is tested in tests/test_model_use.py.
TINY_CONFIG = """\
data:
  include: ["notes/**/*.md"]
  val_fraction: 0.15
profiles:
  ci: {n_layer: 2, n_head: 2, n_embd: 64, block_size: 64, batch_size: 8, max_iters: 40,
       learning_rate: 0.003, min_lr: 0.0003, warmup_iters: 5, tokenizer: bytes}
"""


def repo_files() -> dict[str, bytes]:
    return {**{p: t.encode() for p, t in corpus().items()}, ".github/retrain.yml": TINY_CONFIG.encode(),
            "README.md": b"# test repository\n"}


def git(path: Path, *args: str) -> str:
    env = {**os.environ, **BOT_IDENTITY}
    return subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True, text=True, env=env).stdout


def make_local_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    for rel, content in repo_files().items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(content)
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "corpus")
    return path


def set_ci_profile(emu, repo: str = "octo/demo", **overrides: object) -> str:
    """Commit a `.github/retrain.yml` whose tiny `ci` profile has these overrides; the commit's oid."""
    import yaml

    config = yaml.safe_load(TINY_CONFIG)
    config["profiles"]["ci"].update(overrides)
    return emu.commit_files(repo, {".github/retrain.yml": yaml.safe_dump(config).encode()}, message="tune ci")
