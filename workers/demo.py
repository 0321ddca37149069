"""The embedded default for `retrain demo`: a small git repository with a corpus written here, so the
whole pipeline runs with no GitHub App, no network and no Redis.

The corpus is generated from templates with a fixed seed: varied enough that validation loss means
something, regular enough that a small model visibly learns it within a CPU session. Every later run
first commits a new note, as a living repository would, so a newcomer sees learning go on across edits.
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
LATER_TOPICS = ["Bridges", "Bells", "Boats", "Maps", "Windows", "Bread", "Rain", "Hills", "Stones", "Grass"]

CONFIG = """\
# Retrain's repository config (see the README's configuration reference).
progress_dir: .training-progress
data:
  include: ["notes/**/*.md"]
  val_fraction: 0.15
profiles:
  # The notes are generated from a few hundred words, and a BPE (what `tokenizer: auto` would take for this
  # much text) learns them by heart in two sessions; on bytes the demo improves with every session.
  ci: {n_layer: 4, n_head: 4, n_embd: 128, block_size: 128, batch_size: 16, max_iters: 150,
       learning_rate: 0.002, min_lr: 0.0002, warmup_iters: 20, tokenizer: bytes}
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
    _commit(path, files, "Demo corpus and config", ["init", "-q", "-b", "main"])
    return path


def add_a_note(path: Path) -> str:
    """Commit one more note (or, once every topic is written, one more paragraph to a note): the edit a
    living repository makes between sessions. Returns what was done, for the user."""
    notes = path / "notes"
    written = {p.stem for p in notes.glob("*.md")}
    rng = random.Random(len(written) * 7919 + sum(p.stat().st_size for p in notes.glob("*.md")))
    fresh = [t for t in LATER_TOPICS if t.lower() not in written]
    if fresh:
        rel, text = f"notes/{fresh[0].lower()}.md", note(fresh[0], rng)
        done = f"added {rel}"
    else:
        target = sorted(notes.glob("*.md"))[rng.randrange(len(written))]
        rel = f"notes/{target.name}"
        text = target.read_text() + "\n" + note("", rng, paragraphs=1).removeprefix("# \n\n")
        done = f"added a paragraph to {rel}"
    _commit(path, {rel: text}, f"Demo: {done}")
    return done


def _commit(path: Path, files: dict[str, str], message: str, first: list[str] | None = None) -> None:
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    env = {**os.environ, **BOT_IDENTITY}
    for args in ([first] if first else []) + [["add", "-A", "notes", ".github", "README.md"],
                                             ["commit", "-q", "-m", message]]:
        subprocess.run(["git", "-C", str(path), *args], check=True, env=env, capture_output=True)
