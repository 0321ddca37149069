"""`init_from`: a lineage started from a pretrained GPT-2 that `transformers` itself creates and saves here
(no download), continued by later sessions without the source, and refused where the operator allows none."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from tokenizers import Tokenizer as HFTokenizer

from app.errors import SessionError
from tests.repos import TINY_CONFIG, git, make_local_repo
from workers.local import local_best, run_local_session
from workers.session.export import write_export
from workers.session.pretrained import PretrainedSources, read_pretrained
from workers.trainer.data import eval_starts
from workers.trainer.tokenizer import train_bpe

VOCAB = 300


def save_tiny_gpt2(folder: Path, text: bytes) -> Path:
    """A GPT-2 of transformers' own making (its default activation, gelu_new) with a BPE tokenizer."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)  # config.json + model.safetensors
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=HFTokenizer.from_str(train_bpe(text, VOCAB).to_json()))
    fast.save_pretrained(folder)  # tokenizer.json
    return folder


def local_session(repo: Path, store: str):
    return asyncio.run(run_local_session(repo, profile="ci", max_iters=8, fresh=False, store_url=store,
                                         say=lambda _line: None))


def test_a_lineage_starts_from_a_pretrained_gpt2_and_goes_on_without_it(tmp_path: Path) -> None:
    repo = make_local_repo(tmp_path / "repo")
    text = b"".join(p.read_bytes() for p in sorted((repo / "notes").rglob("*.md")))
    source = save_tiny_gpt2(tmp_path / "tiny-gpt2", text)
    (repo / ".github/retrain.yml").write_text(
        TINY_CONFIG.replace("tokenizer: bytes}", f"init_from: '{source}'}}"))
    git(repo, "commit", "-qam", "start from a pretrained model")
    store = f"file://{tmp_path / 'store'}"

    first = local_session(repo, store)
    assert first.facts.parent_checkpoint is None
    assert any("started a new lineage from the pretrained model" in n for n in first.facts.notes)
    assert first.facts.model_config["n_embd"] == 32 and first.facts.model_config["activation"] == "gelu_tanh"
    assert (first.facts.fingerprint.model_extra or {}).get("base_model") == str(source)
    # The session started from the pretrained weights themselves: its "before" figure is what transformers'
    # model scores on the same validation windows (nats per byte).
    best = asyncio.run(local_best(repo, profile="ci", store_url=None, default_store=store))
    hf = transformers.AutoModelForCausalLM.from_pretrained(source).eval()
    val = best.tokenizer.encode(_val_text(repo, best))
    nats = n_bytes = 0.0
    with torch.no_grad():
        for start in eval_starts(val.numel(), 64):
            window = val[start:start + 65].long()
            logits = hf(window[None, :-1]).logits[0]
            nats += float(torch.nn.functional.cross_entropy(logits, window[1:], reduction="sum"))
            n_bytes += float(best.tokenizer.token_bytes[window[1:]].sum())
    assert first.facts.val_loss_before == pytest.approx(nats / n_bytes, rel=1e-4)

    shutil.rmtree(source)  # later sessions continue from the lineage's checkpoints, not the source
    second = local_session(repo, store)
    assert second.facts.parent_checkpoint == first.facts.checkpoint_id
    assert second.facts.fingerprint.tokenizer == first.facts.fingerprint.tokenizer

    # Its export is GPT-2 with GPT-2's activation, and loads with the same logits.
    best = asyncio.run(local_best(repo, profile="ci", store_url=None, default_store=store))
    out = write_export(best, tmp_path / "export", source="octo/demo")
    again = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert again.config.activation_function == "gelu_new"
    ids = best.tokenizer.encode(b"Notes on learning.").view(1, -1).long()
    from workers.trainer.sample import served_model

    ours = served_model(best.model_config, best.payload, torch.device("cpu"))
    with torch.no_grad():
        assert torch.allclose(again(ids).logits, ours(ids)[0], atol=1e-4)


def _val_text(repo: Path, best) -> bytes:
    from workers.trainer.data import split_text  # the files data.include selects: notes/**/*.md

    files = {str(p.relative_to(repo)): p.read_bytes() for p in (repo / "notes").rglob("*.md")}
    return split_text(files, val_fraction=best.config.data.val_fraction, block_size=64).val


def test_the_app_reads_only_what_its_operator_allows(tmp_path: Path) -> None:
    nowhere = PretrainedSources()
    for name in ("/etc", str(tmp_path), "file:///etc/passwd", "http://169.254.169.254/latest", "gpt2"):
        with pytest.raises(SessionError, match="RETRAIN_PRETRAINED_ROOTS"):
            nowhere.resolve(name)
    allowed = PretrainedSources(roots=(str(tmp_path / "models"),))
    assert allowed.resolve(f"{tmp_path}/models/tiny") == f"{tmp_path}/models/tiny"
    for name in (f"{tmp_path}/models/../secrets", f"{tmp_path}/models-evil/x", str(tmp_path)):
        with pytest.raises(SessionError):
            allowed.resolve(name)
    assert PretrainedSources(hub=True).resolve("openai-community/gpt2") == "hub:openai-community/gpt2"
    with pytest.raises(SessionError):
        PretrainedSources(hub=True).resolve("http://example.com/gpt2")


def test_a_pretrained_network_keeps_to_the_operators_limits_before_its_weights_are_read(tmp_path: Path) -> None:
    from app.config.limits import Limits
    from app.config.repo_config import parse_repo_config
    from workers.session.store import CheckpointStore
    from workers.session.tokenizer_choice import choose_base

    folder = save_tiny_gpt2(tmp_path / "models" / "wide", b"merges from this text " * 50)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "n_positions": 1024, "n_embd": 4096}))
    (folder / "model.safetensors").write_bytes(b"never read: the config alone is refused")
    profile = parse_repo_config(TINY_CONFIG.replace("tokenizer: bytes}", f"init_from: '{folder}'}}")).profiles["ci"]
    sources = PretrainedSources(roots=(str(tmp_path / "models"),),
                                limits=Limits(max_block_size=64, max_tokens_per_iter=512, max_params=10**6))
    with pytest.raises(SessionError) as refused:
        choose_base(CheckpointStore(f"file://{tmp_path / 'store'}"), {}, profile, sources, fresh=False,
                    within="octo/demo/run", notes=[], unusable=set())
    message = str(refused.value)
    assert "block_size is 1,024, over this App's limit of 64 (RETRAIN_MAX_BLOCK_SIZE" in message
    assert "parameter count" in message and "RETRAIN_MAX_TOKENS_PER_ITER" in message


def test_a_model_that_is_not_a_safe_gpt2_is_refused_clearly(tmp_path: Path) -> None:
    folder = save_tiny_gpt2(tmp_path / "tiny", b"some text to learn merges from " * 50)
    pickled = tmp_path / "pickled"  # a config and a tokenizer beside pickled weights only
    pickled.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(folder / name, pickled / name)
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded, ever")
    with pytest.raises(SessionError, match=r"model\.safetensors not found"):
        read_pretrained(str(pickled), max_bytes=1 << 20)
    with pytest.raises(SessionError, match="'n_embd'"):
        (pickled / "config.json").write_text('{"model_type": "gpt2"}')
        read_pretrained(str(pickled), max_bytes=1 << 20)
    with pytest.raises(SessionError, match="over the"):
        read_pretrained(str(folder), max_bytes=1000)
    llama = tmp_path / "llama"
    shutil.copytree(folder, llama)
    (llama / "config.json").write_text((folder / "config.json").read_text().replace('"gpt2"', '"llama"'))
    with pytest.raises(SessionError, match="not a GPT-2 model"):
        read_pretrained(str(llama), max_bytes=1 << 30)
    loaded = read_pretrained(str(folder), max_bytes=1 << 30)
    assert loaded.model_config.activation == "gelu_tanh" and loaded.tokenizer.vocab_size == VOCAB
    import fsspec  # an fsspec URL reads the same model: here the in-memory filesystem fsspec ships with

    memory = fsspec.filesystem("memory")
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        memory.pipe(f"/tiny-gpt2/{name}", (folder / name).read_bytes())
    by_url = read_pretrained("memory://tiny-gpt2", max_bytes=1 << 30)
    assert by_url.tokenizer.id == loaded.tokenizer.id and by_url.model_config == loaded.model_config
    assert all(torch.equal(by_url.weights[k], loaded.weights[k]) for k in loaded.weights)
