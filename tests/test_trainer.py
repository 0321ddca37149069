"""The training engine: model, byte corpus and split, the loop, checkpoints and resuming.

Everything runs on the CPU with tiny configs; the whole module takes a few seconds.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch

from workers.trainer.data import SPLIT_BY_FILE, SPLIT_TAIL_BLOCK, TOKENIZER_ID, build_corpus
from workers.trainer.model import GPT, ModelConfig
from workers.trainer.train import (
    Progress,
    TrainConfig,
    TrainResult,
    get_lr,
    load_state,
    save_state,
    train,
)

LN_VOCAB = math.log(256)
BLOCK = 32
TINY = ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=BLOCK)
TEXT = b"the quick brown fox jumps over the lazy dog. " * 200  # repetitive: easy to learn


def tiny_train_config(max_iters: int, **overrides: object) -> TrainConfig:
    base = dict(
        max_iters=max_iters,
        batch_size=4,
        learning_rate=3e-3,
        min_lr=3e-4,
        warmup_iters=5,
        lr_decay_iters=200,
        eval_iters=4,
        device="cpu",
    )
    return TrainConfig(**{**base, **overrides})  # type: ignore[arg-type]


def rank(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()


@pytest.fixture(scope="module")
def corpus():
    return build_corpus({"fox.txt": TEXT}, block_size=BLOCK)


@pytest.fixture(scope="module")
def first(corpus) -> TrainResult:
    return train(TINY, tiny_train_config(60), corpus)


# --- model -------------------------------------------------------------------------------------------


def test_forward_shapes_and_initial_loss_is_uniform() -> None:
    torch.manual_seed(0)
    model = GPT(TINY)
    idx, targets = torch.randint(0, 256, (2, 4, BLOCK))
    logits, loss = model(idx, targets)
    assert logits.shape == (4, BLOCK, 256)
    assert loss is not None and abs(loss.item() - LN_VOCAB) < 0.1  # small init: near-uniform predictions
    logits, loss = model(idx[:, :5])
    assert logits.shape == (4, 5, 256) and loss is None
    assert model.lm_head.weight is model.transformer.wte.weight  # tied


def test_forward_rejects_sequences_longer_than_the_block() -> None:
    with pytest.raises(ValueError, match="longer than block_size"):
        GPT(TINY)(torch.zeros(1, BLOCK + 1, dtype=torch.long))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_embd": 30, "n_head": 4}, "divisible by n_head"),
        ({"n_layer": 0}, "n_layer must be a positive integer"),
        ({"block_size": -1}, "block_size must be a positive integer"),
        ({"dropout": 1.0}, "dropout"),
        ({"n_head": 2.0}, "n_head must be a positive integer"),
    ],
)
def test_bad_model_config_is_a_clear_error(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(TINY, **overrides)


def test_model_config_dict_roundtrip_ignores_unknown_keys() -> None:
    d = TINY.to_dict() | {"model_type": "gpt", "n_params": 123}  # old metadata carries extra fields
    assert ModelConfig.from_dict(d) == TINY


# --- corpus ------------------------------------------------------------------------------------------


def make_files(n: int, size: int = 1000) -> dict[str, bytes]:
    return {f"notes/{i:02d}.md": bytes([65 + i]) * size for i in range(n)}


def test_by_file_split_is_disjoint_deterministic_and_big_enough() -> None:
    files = make_files(10)
    c = build_corpus(files, block_size=BLOCK)
    assert c.split == SPLIT_BY_FILE
    assert set(c.train_files).isdisjoint(c.val_files)
    assert set(c.train_files) | set(c.val_files) == set(files)
    assert c.val.numel() >= 0.1 * sum(map(len, files.values()))
    assert c.val.numel() == sum(len(files[p]) for p in c.val_files)
    # val is the shortest prefix of the sha256(path) order that holds val_fraction of the bytes
    ranked = sorted(files, key=rank)
    assert set(c.val_files) == set(ranked[: len(c.val_files)])
    again = build_corpus(dict(reversed(list(files.items()))), block_size=BLOCK)
    assert (again.train_files, again.val_files) == (c.train_files, c.val_files)
    assert again.fingerprint() == c.fingerprint()


def test_adding_an_unrelated_file_keeps_the_split_of_existing_files() -> None:
    files = make_files(10)
    ranked = sorted(files, key=rank)
    files[ranked[0]] = b"x" * 3000  # the first-ranked file alone is 25% of the bytes: slack above 10%
    before = build_corpus(files, block_size=BLOCK)
    assert before.val_files == (ranked[0],)
    new = next(p for p in (f"new/{i}.md" for i in range(100)) if rank(p) > rank(ranked[0]))
    after = build_corpus(files | {new: b"y" * 500}, block_size=BLOCK)
    assert after.val_files == before.val_files
    assert set(after.train_files) == set(before.train_files) | {new}


def test_new_file_ranked_after_the_cut_never_moves_a_val_file_to_train() -> None:
    files = make_files(10)
    before = build_corpus(files, block_size=BLOCK)
    last_val = max(before.val_files, key=rank)
    for i in range(20):
        path = f"extra/{i}.md"
        after = build_corpus(files | {path: b"z" * (300 * (i + 1))}, block_size=BLOCK)
        if rank(path) > rank(last_val):
            assert set(before.val_files) <= set(after.val_files)


def test_single_file_holds_out_its_tail() -> None:
    c = build_corpus({"fox.txt": TEXT}, val_fraction=0.1, block_size=BLOCK)
    assert c.split == SPLIT_TAIL_BLOCK
    assert c.train_files == c.val_files == ("fox.txt",)
    n_val = math.ceil(0.1 * len(TEXT))
    assert c.val.numel() == n_val and c.train.numel() == len(TEXT) - n_val
    assert bytes(c.train.tolist()) + bytes(c.val.tolist()) == TEXT
    assert c.train.dtype == torch.uint8


def test_tiny_held_out_files_fall_back_to_a_tail_split() -> None:
    # Whichever file is held out, one of the two sides would be shorter than block_size + 2 bytes.
    files = {"big.md": b"a" * 5000, "small.md": b"b" * 10}
    c = build_corpus(files, block_size=BLOCK)
    assert c.split == SPLIT_TAIL_BLOCK
    assert c.val.numel() > BLOCK + 1 and c.train.numel() > BLOCK + 1
    assert bytes(c.train.tolist()) + bytes(c.val.tolist()) == b"a" * 5000 + b"b" * 10


@pytest.mark.parametrize(
    ("files", "found"),
    [
        ({}, "found no files"),
        ({"a.md": b"", "b.md": b""}, "found 0 bytes in 0 non-empty file"),
        ({"a.md": b"x" * 40, "b.md": b"y" * 20}, "found 60 bytes in 2 non-empty file"),
    ],
)
def test_too_little_data_is_a_clear_error(files: dict[str, bytes], found: str) -> None:
    with pytest.raises(ValueError, match=found) as info:
        build_corpus(files, block_size=BLOCK)
    assert "need at least 68 bytes" in str(info.value) and "block_size + 1 = 33" in str(info.value)


def test_fingerprint_covers_bytes_split_and_tokenizer() -> None:
    base = build_corpus({"fox.txt": TEXT}, block_size=BLOCK)
    assert base.fingerprint() == build_corpus({"fox.txt": TEXT}, block_size=BLOCK).fingerprint()
    flipped = TEXT[:100] + b"X" + TEXT[101:]
    assert build_corpus({"fox.txt": flipped}, block_size=BLOCK).fingerprint() != base.fingerprint()
    moved = build_corpus({"fox.txt": TEXT}, val_fraction=0.2, block_size=BLOCK)
    assert moved.fingerprint() != base.fingerprint()
    renamed = build_corpus({"dog.txt": TEXT}, block_size=BLOCK)
    assert renamed.fingerprint() != base.fingerprint()
    assert TOKENIZER_ID == "bytes-v1"


# --- training ----------------------------------------------------------------------------------------


def test_loss_goes_down_on_a_repetitive_corpus(first: TrainResult) -> None:
    assert (first.start_iteration, first.end_iteration, len(first.losses)) == (0, 60, 60)
    assert first.val_loss_before is not None and abs(first.val_loss_before - LN_VOCAB) < 0.2
    assert sum(first.losses[-10:]) / 10 < sum(first.losses[:10]) / 10 - 1.5
    assert first.val_loss_after < first.val_loss_before - 1.5
    assert first.train_loss < LN_VOCAB - 1.5
    assert first.learning_rate == get_lr(59, tiny_train_config(60))
    assert first.tokens_per_s > 0 and first.elapsed_s > 0


def test_resumed_session_continues_and_runs_all_its_iterations(corpus, first: TrainResult) -> None:
    second = train(TINY, tiny_train_config(25), corpus, resume=load_state(save_state(first.state)))
    assert second.start_iteration == 60 and second.end_iteration == 85 and len(second.losses) == 25
    assert second.state["iteration"] == 85
    last = sum(first.losses[-5:]) / 5
    assert second.losses[0] < LN_VOCAB - 2 and abs(second.losses[0] - last) < 0.5
    # the same weights and the same fixed eval batches give the same estimate in both sessions
    assert second.val_loss_before == first.val_loss_after
    assert second.learning_rate == get_lr(84, tiny_train_config(25))  # schedule uses the global iteration


def test_progress_is_reported_every_n_iterations_and_at_the_end(corpus) -> None:
    seen: list[Progress] = []
    result = train(TINY, tiny_train_config(25), corpus, on_progress=seen.append, progress_every=10)
    assert [(p.iteration, p.session_iteration) for p in seen] == [(10, 10), (20, 20), (25, 25)]
    assert [p.loss for p in seen] == [result.losses[9], result.losses[19], result.losses[24]]
    assert all(p.max_iters == 25 and p.tokens_per_s > 0 for p in seen)


def test_checkpoint_roundtrip_is_exact_and_weights_only(first: TrainResult) -> None:
    state = load_state(save_state(first.state))
    assert state["format"] == "retrain-checkpoint-v1" and state["iteration"] == 60
    assert ModelConfig.from_dict(state["model_config"]) == TINY
    assert state["corpus_fingerprint"] == build_corpus({"fox.txt": TEXT}, block_size=BLOCK).fingerprint()
    for key, tensor in first.state["model"].items():
        assert torch.equal(state["model"][key], tensor)
    assert all(t.device.type == "cpu" for t in state["model"].values())


class NotPlainData:
    pass


@pytest.mark.parametrize(
    "blob",
    [b"", b"definitely not a checkpoint", "pickle-with-object", "not-a-payload"],
)
def test_unreadable_checkpoints_are_value_errors(blob: bytes | str) -> None:
    if blob == "pickle-with-object":  # weights_only refuses to build arbitrary objects
        buf = io.BytesIO()
        torch.save({"format": "retrain-checkpoint-v1", "x": NotPlainData()}, buf)
        blob = buf.getvalue()
    elif blob == "not-a-payload":
        blob = save_state({"format": "something-else"})
    with pytest.raises(ValueError, match="checkpoint could not be read"):
        load_state(blob)  # type: ignore[arg-type]


def test_truncated_checkpoint_is_a_value_error(first: TrainResult) -> None:
    blob = save_state(first.state)
    with pytest.raises(ValueError, match="checkpoint could not be read"):
        load_state(blob[: len(blob) // 2])


def test_resume_with_another_model_config_is_refused(corpus, first: TrainResult) -> None:
    wider = replace(TINY, n_embd=64)
    with pytest.raises(ValueError, match=r"model config differs \(n_embd 32 -> 64\)"):
        train(wider, tiny_train_config(1), corpus, resume=first.state)


def test_resume_leaves_the_callers_payload_and_global_rng_alone(corpus, first: TrainResult) -> None:
    state = load_state(save_state(first.state))
    exp_avg = [s["exp_avg"].clone() for s in state["optimizer"]["state"].values()]
    rng = torch.get_rng_state()
    train(TINY, tiny_train_config(3), corpus, resume=state)
    assert torch.equal(torch.get_rng_state(), rng)
    for saved, s in zip(exp_avg, state["optimizer"]["state"].values(), strict=True):
        assert torch.equal(saved, s["exp_avg"])


def test_bad_train_config_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="max_iters must be a positive integer"):
        tiny_train_config(0)
    with pytest.raises(ValueError, match="warmup_iters <= lr_decay_iters"):
        tiny_train_config(5, warmup_iters=10, lr_decay_iters=5)


def test_lr_schedule_warms_up_then_decays_to_min_lr() -> None:
    cfg = TrainConfig(max_iters=1, learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, lr_decay_iters=100)
    warm = [get_lr(i, cfg) for i in range(10)]
    assert warm == sorted(warm) and warm[-1] < cfg.learning_rate
    assert get_lr(10, cfg) == pytest.approx(cfg.learning_rate)
    assert get_lr(100, cfg) == get_lr(10_000, cfg) == cfg.min_lr


@pytest.fixture
def deterministic() -> Iterator[None]:
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(was)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_two_sessions_of_n_equal_one_session_of_2n(corpus, deterministic: None, dropout: float) -> None:
    config = replace(TINY, n_layer=2, dropout=dropout)
    whole = train(config, tiny_train_config(20), corpus)
    a = train(config, tiny_train_config(10), corpus)
    b = train(config, tiny_train_config(10), corpus, resume=load_state(save_state(a.state)))
    assert a.losses + b.losses == whole.losses
    for key, tensor in whole.state["model"].items():
        assert torch.equal(b.state["model"][key], tensor), key
    for i, moments in whole.state["optimizer"]["state"].items():
        for key, tensor in moments.items():
            assert torch.equal(b.state["optimizer"]["state"][i][key], tensor), (i, key)
    assert torch.equal(b.state["sampler"]["generator"], whole.state["sampler"]["generator"])
    assert b.val_loss_after == whole.val_loss_after


def test_should_stop_ends_early_with_a_checkpoint_that_resumes(corpus) -> None:
    calls: list[int] = []

    def stop_after_two_reports() -> bool:
        calls.append(1)
        return len(calls) >= 2

    stopped = train(TINY, TrainConfig(max_iters=50, batch_size=4, eval_iters=2), corpus, progress_every=5,
                    should_stop=stop_after_two_reports)
    assert stopped.stopped_early and stopped.end_iteration == 10 and len(stopped.losses) == 10
    assert stopped.state["iteration"] == 10
    resumed = train(TINY, TrainConfig(max_iters=5, batch_size=4, eval_iters=2), corpus, resume=stopped.state)
    assert (resumed.start_iteration, resumed.end_iteration, resumed.stopped_early) == (10, 15, False)
