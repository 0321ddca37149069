"""The embedded default for `retrain demo`: a small git repository with a corpus written here, so the
whole pipeline runs with no GitHub App, no network and no Redis.

The corpus is generated from templates with a fixed seed: varied enough that validation loss means
something, regular enough that a small model visibly learns it within a CPU session.
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

from workers.session.repos import BOT_IDENTITY

SUBJECTS = ["the gardener", "a small robot", "the old river", "my neighbour", "the night train", "a curious cat",
            "the lighthouse keeper", "the baker", "a quiet student", "the wind"]
VERBS = ["carries", "remembers", "paints", "follows", "counts", "waters", "repairs", "sings to", "watches", "builds"]
OBJECTS = ["the morning light", "seven blue stones", "a paper boat", "the last letter", "an open window",
           "the tall grass", "a warm loaf of bread", "the harbour bells", "a map of the stars", "the garden gate"]
PLACES = ["by the sea", "under the bridge", "in the valley", "before dawn", "after the rain", "at the market",
          "beside the old mill", "on the hill", "in the library", "along the canal"]
TOPICS = ["Seasons", "Harbour", "Workshop", "Garden", "Night", "Market", "Library", "Valley", "Mill", "Canal",
          "Stars", "Letters"]

CONFIG = """\
# Retrain's repository config (see the README's configuration reference).
progress_dir: .training-progress
data:
  include: ["notes/**/*.md"]
  val_fraction: 0.15
profiles:
  ci: {n_layer: 4, n_head: 4, n_embd: 128, block_size: 128, batch_size: 16, max_iters: 150,
       learning_rate: 0.002, min_lr: 0.0002, warmup_iters: 20, lr_decay_iters: 2000, eval_iters: 10}
retention: {max_checkpoints: 5}
"""


def sentence(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)}."


def note(topic: str, rng: random.Random, paragraphs: int = 10) -> str:
    body = "\n\n".join(" ".join(sentence(rng) for _ in range(rng.randint(4, 7))) for _ in range(paragraphs))
    return f"# {topic}\n\n{body}\n"


def corpus(seed: int = 7) -> dict[str, str]:
    rng = random.Random(seed)
    return {f"notes/{topic.lower()}.md": note(topic, rng) for topic in TOPICS}


def create_demo_repo(path: Path) -> Path:
    """A fresh repository with the corpus and config committed; an existing one is left as it is."""
    if (path / ".git").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    files = {**corpus(), ".github/retrain.yml": CONFIG,
             "README.md": "# Retrain demo\n\nNotes that a small GPT learns, session after session.\n"}
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    env = {**os.environ, **BOT_IDENTITY}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "Demo corpus and config"]):
        subprocess.run(["git", "-C", str(path), *args], check=True, env=env, capture_output=True)
    return path
