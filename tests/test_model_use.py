"""A model people can use: sampling it, exporting it to the Hugging Face format (and loading that with
`transformers`), and training it with a BPE that lives with the lineage. Real git repositories, real
sessions, the real `transformers` library."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers  # the dev extra installs it (as retrain[hf] does): without it this module fails loudly

from tests.processes import ROOT
from tests.repos import TINY_CONFIG, git, make_local_repo
from workers.local import local_best, run_local_session
from workers.session.export import EXPORT_FILES, write_export
from workers.trainer.data import bits_per_byte, build_corpus
from workers.trainer.model import GPT, ModelConfig
from workers.trainer.sample import SampleSettings, generate, served_model
from workers.trainer.tokenizer import BYTES, from_checkpoint, train_bpe

BPE_CONFIG = TINY_CONFIG.replace("tokenizer: bytes", "tokenizer: bpe, vocab_size: 512")
AUTO_CONFIG = TINY_CONFIG.replace("tokenizer: bytes", "vocab_size: 512")  # the default, tokenizer: auto
assert BPE_CONFIG != TINY_CONFIG != AUTO_CONFIG


def session(repo: Path, store: str, iters: int = 12, fresh: bool = False):
    return asyncio.run(run_local_session(repo, profile="ci", max_iters=iters, fresh=fresh, store_url=store,
                                         say=lambda _line: None))


def best_of(repo: Path, store: str | None = None):
    return asyncio.run(local_best(repo, profile="ci", store_url=store, default_store="file:///nonexistent"))


def bpe_repo(path: Path) -> Path:
    repo = make_local_repo(path)
    (repo / ".github/retrain.yml").write_text(BPE_CONFIG)
    git(repo, "commit", "-qam", "bpe")
    return repo


# --- sampling ---------------------------------------------------------------------------------------------

def test_the_cached_decoder_computes_what_the_full_forward_pass_computes() -> None:
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50)).eval()
    ids = torch.randint(0, 50, (1, 9))
    cache = model.new_cache()
    first = model.decode(ids[:, :5], cache)
    with torch.no_grad():
        assert torch.allclose(first, model(ids[:, :5])[0][:, -1], atol=1e-5)
        for t in range(5, 9):
            step = model.decode(ids[:, t:t + 1], cache)
            assert torch.allclose(step, model(ids[:, : t + 1])[0][:, -1], atol=1e-5)


def test_sampling_is_the_same_for_a_seed_differs_across_seeds_and_runs_past_the_context() -> None:
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=40)).eval()
    prompt = torch.tensor([1, 2, 3])
    a = list(generate(model, prompt, SampleSettings(max_new_tokens=30, seed=7)))
    assert a == list(generate(model, prompt, SampleSettings(max_new_tokens=30, seed=7)))
    assert a != list(generate(model, prompt, SampleSettings(max_new_tokens=30, seed=8)))
    assert len(a) == 30 and all(0 <= t < 40 for t in a)  # 3 + 30 tokens: well past block_size 8
    greedy = list(generate(model, prompt, SampleSettings(max_new_tokens=4, temperature=0.0)))
    context, expected = prompt.view(1, -1), []
    with torch.no_grad():
        for _ in range(4):
            expected.append(int(model(context[:, -8:])[0][0, -1].argmax()))
            context = torch.cat([context, torch.tensor([[expected[-1]]])], dim=1)
    assert greedy == expected
    with pytest.raises(ValueError, match="max_new_tokens"):
        SampleSettings(max_new_tokens=10**9)


# --- tokenizers -------------------------------------------------------------------------------------------

def test_a_bpe_encodes_every_text_exactly_and_its_token_bytes_count_the_text() -> None:
    text = ("Persistent learning: the model keeps improving while the repository lives. " * 40).encode()
    tok = train_bpe(text, 400)
    assert tok.id == train_bpe(text, 400).id  # deterministic for the same text
    assert tok.id != train_bpe(text + b" other words entirely", 400).id
    for sample in (text, "ünïcödé, 漢字 and emoji 🙂\n\t".encode(), bytes(range(0x20, 0x7f))):
        ids = tok.encode(sample)
        assert tok.decode(ids) == sample
        assert float(tok.token_bytes[ids.long()].sum()) == len(sample)  # what bits per byte divides by
    assert tok.encode(text).numel() < len(text) / 3  # it does compress
    long_line = ("word " * 40_000).encode()  # one line far over the encoder's chunk: cut where a word starts
    from tokenizers import Tokenizer as HFTokenizer

    whole = HFTokenizer.from_str(tok.to_json()).encode(long_line.decode()).ids
    assert tok.encode(long_line).tolist() == whole
    from workers.trainer.tokenizer import learning_sample

    assert learning_sample(b"x" * 10) == b"x" * 10
    spread = learning_sample(bytes(range(256)) * 20_000, limit=1 << 16, window=1 << 12)
    assert len(spread) == 1 << 16 and spread[-1] == 255  # bounded, and the end of the text is in it
    assert from_checkpoint(tok.id, tok.to_json()).id == tok.id
    with pytest.raises(ValueError, match="not the"):
        from_checkpoint(tok.id.replace(tok.id[-4:], "0000"), tok.to_json())
    with pytest.raises(ValueError, match="does not carry"):
        from_checkpoint(tok.id, None)


def test_bits_per_byte_are_nats_over_the_bytes_of_the_predicted_tokens_for_any_tokenizer() -> None:
    from workers.trainer.train import TrainConfig, _estimate_loss, evaluate, train

    text = b"".join(f"Line {i}: the quick brown fox {i % 7} jumps over the lazy dog.\n".encode() for i in range(600))
    tok = train_bpe(text, 300)
    corpus = build_corpus({"a.txt": text}, block_size=32, tokenizer=tok)
    cfg = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=300)
    result = train(cfg, TrainConfig(max_iters=3, batch_size=4, device="cpu"), corpus)
    model = GPT(cfg)
    model.load_state_dict(result.state["model"])
    model.eval()
    from workers.trainer.data import eval_starts

    nats = n_bytes = 0.0
    with torch.no_grad():
        for start in eval_starts(corpus.val.numel(), 32):
            window = corpus.val[start:start + 33].long()
            logits = model(window[None, :-1])[0][0]
            nats += float(torch.nn.functional.cross_entropy(logits, window[1:], reduction="sum"))
            n_bytes += float(tok.token_bytes[window[1:]].sum())
    assert result.val_loss_after == pytest.approx(nats / n_bytes, rel=1e-5)
    assert evaluate(cfg, result.state, corpus, device="cpu") == pytest.approx(result.val_loss_after, rel=1e-6)
    assert _estimate_loss(model, corpus.val, torch.device("cpu"), tok.token_bytes) == pytest.approx(nats / n_bytes)
    assert result.state["tokenizer"] == tok.id and result.state["tokenizer_json"] == tok.to_json()
    other = train_bpe(text.replace(b"fox", b"cat"), 300)  # the same size, other merges
    with pytest.raises(ValueError, match="checkpoint's tokenizer is"):
        train(cfg, TrainConfig(max_iters=1, device="cpu"), build_corpus({"a.txt": text}, block_size=32,
              tokenizer=other), resume=result.state)


def test_a_bpe_lineage_keeps_its_tokenizer_as_the_text_changes_and_a_fresh_start_learns_a_new_one(
        tmp_path: Path) -> None:
    repo = bpe_repo(tmp_path / "repo")
    store = f"file://{tmp_path / 'store'}"
    first = session(repo, store)
    tokenizer = first.facts.fingerprint.tokenizer
    assert tokenizer.startswith("bpe-v1:512:") and first.facts.model_config["vocab_size"] == 512
    assert any("learnt a byte-level BPE of 512 tokens" in n for n in first.facts.notes)
    (repo / "notes" / "new.md").write_text("A brand new note with words the merges never saw: zyxwvut qqq.\n" * 30)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "more text")
    second = session(repo, store)
    assert second.facts.parent_checkpoint == first.facts.checkpoint_id
    assert second.facts.fingerprint.tokenizer == tokenizer  # the lineage's merges, not new ones
    assert second.facts.val_bpb_after < bits_per_byte(second.facts.unigram_val_loss)
    fresh = session(repo, store, fresh=True)
    assert fresh.facts.parent_checkpoint is None and fresh.facts.fingerprint.tokenizer != tokenizer
    # The repository's text was edited: the fresh BPE learnt from today's training split.
    best = best_of(repo)
    assert best.tokenizer.id in (tokenizer, fresh.facts.fingerprint.tokenizer)


def topics_text(size: int) -> bytes:
    from pydoc_data import topics

    return "\n\n".join(topics.topics[k] for k in sorted(topics.topics)).encode()[:size]


def test_auto_starts_new_lineages_on_bpe_and_goes_on_with_an_existing_byte_lineage(tmp_path: Path) -> None:
    fresh_repo = make_local_repo(tmp_path / "new")
    (fresh_repo / ".github/retrain.yml").write_text(AUTO_CONFIG)
    (fresh_repo / "notes" / "topics.md").write_bytes(topics_text(200_000))  # real text, past AUTO_BPE_MIN_BYTES
    git(fresh_repo, "add", "-A")
    git(fresh_repo, "commit", "-qm", "defaults, and enough text")
    new = session(fresh_repo, f"file://{tmp_path / 'store-new'}")
    assert new.facts.fingerprint.tokenizer.startswith("bpe-v1:512:")
    assert session(fresh_repo, f"file://{tmp_path / 'store-new'}").facts.parent_checkpoint == new.facts.checkpoint_id

    small = make_local_repo(tmp_path / "small")  # 6 KB, a page or two: too little for a BPE to learn from
    (small / ".github/retrain.yml").write_text(AUTO_CONFIG)
    for note in (small / "notes").glob("*.md"):
        note.unlink()
    (small / "notes" / "topics.md").write_bytes(topics_text(6_000))
    git(small, "add", "-A")
    git(small, "commit", "-qm", "defaults, little text")
    on_small = session(small, f"file://{tmp_path / 'store-small'}")
    assert on_small.facts.fingerprint.tokenizer == "bytes-v1"
    assert any("tokenizer auto: bytes for this new lineage (the training text is" in n for n in on_small.facts.notes)
    latin1 = make_local_repo(tmp_path / "latin1")
    (latin1 / ".github/retrain.yml").write_text(AUTO_CONFIG)
    (latin1 / "notes" / "vieux.md").write_bytes(topics_text(200_000).replace(b"e", "\u00e9".encode("latin-1")))
    git(latin1, "add", "-A")
    git(latin1, "commit", "-qm", "text that is not UTF-8")
    on_latin1 = session(latin1, f"file://{tmp_path / 'store-latin1'}")
    assert on_latin1.facts.fingerprint.tokenizer == "bytes-v1"
    assert any("not UTF-8" in n for n in on_latin1.facts.notes)

    old_repo = make_local_repo(tmp_path / "old")  # trained on bytes before BPE was the default (or pinned it)
    store = f"file://{tmp_path / 'store-old'}"
    on_bytes = session(old_repo, store)
    (old_repo / ".github/retrain.yml").write_text(AUTO_CONFIG)
    git(old_repo, "commit", "-qam", "upgrade: tokenizer no longer set")
    after = session(old_repo, store)
    assert after.facts.parent_checkpoint == on_bytes.facts.checkpoint_id  # the lineage is not lost
    assert after.facts.fingerprint.tokenizer == "bytes-v1"
    # 26 KB of training text: a move to a BPE is due, but 12 iterations leave no room for its trial
    assert any("a move to a new BPE is due" in n and "too short to try it" in n for n in after.facts.notes)


def test_switching_a_profile_between_bytes_and_bpe_starts_a_lineage_of_its_own(tmp_path: Path) -> None:
    repo = make_local_repo(tmp_path / "repo")
    store = f"file://{tmp_path / 'store'}"
    on_bytes = session(repo, store)
    (repo / ".github/retrain.yml").write_text(BPE_CONFIG)
    git(repo, "commit", "-qam", "bpe")
    on_bpe = session(repo, store)
    assert on_bpe.facts.parent_checkpoint is None
    assert any("another model shape or tokenizer" in n for n in on_bpe.facts.notes)
    (repo / ".github/retrain.yml").write_text(TINY_CONFIG)
    git(repo, "commit", "-qam", "bytes again")
    back = session(repo, store)
    assert back.facts.parent_checkpoint == on_bytes.facts.checkpoint_id  # the byte lineage goes on


# --- export -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", ["bytes", "bpe"])
def test_an_export_loads_in_transformers_with_the_same_logits_and_tokens(tmp_path: Path, config: str) -> None:
    repo = bpe_repo(tmp_path / "repo") if config == "bpe" else make_local_repo(tmp_path / "repo")
    session(repo, f"file://{tmp_path / 'store'}")
    best = best_of(repo)  # the store is found from the checkout's git config
    out = write_export(best, tmp_path / "export", source="octo/demo")
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPORT_FILES)
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "GPT2LMHeadModel"
    text = "Notes on persistent learning: ünïcödé too.\n"
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert ids[0].tolist() == best.tokenizer.encode(text.encode()).tolist()
    assert tokenizer.decode(ids[0]) == text
    ours = served_model(best.model_config, best.payload, torch.device("cpu"))
    with torch.no_grad():
        theirs, mine = model(ids).logits, ours(ids)[0]
    assert torch.allclose(theirs, mine, atol=1e-4), (theirs - mine).abs().max()
    card = (out / "README.md").read_text()
    assert best.entry.checkpoint_id in card and "bits per byte" in card and "license: other" in card
    trained_on = git(repo, "rev-parse", "HEAD~1").strip()  # the session read this; HEAD is its progress commit
    assert f"`{trained_on}` (the commit whose text it trained on)" in card and best.head.oid in card
    generated = model.generate(ids, do_sample=False)  # the export's own generation config works as it is
    assert generated.shape[1] == best.model_config.block_size
    assert all(oct(p.stat().st_mode)[-3:] == "644" for p in out.iterdir()) and oct(out.stat().st_mode)[-3:] == "755"
    write_export(best, out, source="octo/demo")  # an earlier export is replaced
    clone = tmp_path / "hub-clone"  # a folder with an export's files and more: the user's, never deleted
    shutil.copytree(out, clone)
    (clone / ".git").mkdir()
    (clone / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds more than an earlier export's files"):
        write_export(best, clone, source="octo/demo")
    assert (clone / ".git").is_dir() and (clone / "notes.txt").read_text() == "mine"


def test_retrain_sample_and_export_work_on_the_demo_repository(tmp_path: Path) -> None:
    """The acceptance sequence as a user types it: `retrain demo`, then `retrain sample` and `retrain export`
    with nothing but the repository's path."""
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "home")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    cli("demo", "--dir", str(tmp_path / "demo"), "--max-iters", "10")
    repo = str(tmp_path / "demo" / "repo")
    one = cli("sample", "--repo", repo, "--prompt", "The ", "--max-new-tokens", "40", "--seed", "3")
    again = cli("sample", "--repo", repo, "--prompt", "The ", "--max-new-tokens", "40", "--seed", "3")
    other = cli("sample", "--repo", repo, "--prompt", "The ", "--max-new-tokens", "40", "--seed", "4")
    assert one.stdout.startswith("The ") and len(one.stdout.encode()) >= 40
    assert one.stdout == again.stdout != other.stdout
    assert "iteration 10" in one.stderr
    exported = cli("export", "--repo", repo, "--out", str(tmp_path / "hf"))
    assert "model.safetensors" in exported.stdout
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["vocab_size"] == 256  # auto: the demo is too small for BPE
    missing = subprocess.run([sys.executable, "-m", "app.cli", "sample", "--repo", str(tmp_path)], cwd=ROOT,
                             env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and "not a git working tree" in missing.stderr
    assert BYTES.vocab_size == 256
