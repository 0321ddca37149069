"""The training engine: model, byte corpus and split, the loop, checkpoints and resuming.

Everything runs on the CPU with tiny configs; the whole module takes a few seconds.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import replace
from pydoc_data.topics import topics as TOPICS

import pytest
import torch

from workers.trainer.data import (
    EVAL_WINDOWS,
    MIN_RULE_PIECES,
    SPLIT_PIECES,
    TOKENIZER_ID,
    _pieces,
    _units,
    build_corpus,
    eval_starts,
    held_out,
)
from workers.trainer.model import GPT, ModelConfig
from workers.trainer.train import (
    Progress,
    TrainConfig,
    TrainResult,
    average_decay,
    evaluate,
    get_lr,
    load_state,
    same_stream,
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
        device="cpu",
    )
    return TrainConfig(**{**base, **overrides})  # type: ignore[arg-type]


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


def topic_files(names: list[str], prefix: str = "docs/") -> dict[str, bytes]:
    """Real prose that nobody here wrote: CPython's documentation topics, one file each."""
    return {f"{prefix}{name}.md": TOPICS[name].encode() for name in names}


def held_text(files: dict[str, bytes], **kw: object) -> set[bytes]:
    ranges = held_out(files, val_fraction=kw.get("val_fraction", 0.1), block_size=kw.get("block_size", BLOCK))
    return {files[path][s:e] for path, spans in ranges.items() for s, e in spans}


def test_split_is_disjoint_deterministic_and_near_val_fraction() -> None:
    files = topic_files(sorted(TOPICS)[:40])
    total = sum(map(len, files.values()))
    c = build_corpus(files, block_size=BLOCK)
    assert c.split == SPLIT_PIECES
    assert c.train.numel() + c.val.numel() == total  # every byte on exactly one side
    assert 0.05 <= c.val.numel() / total <= 0.15
    assert set(c.train_files) | set(c.val_files) == set(files)
    again = build_corpus(dict(reversed(list(files.items()))), block_size=BLOCK)
    assert again.fingerprint() == c.fingerprint()


def test_adding_files_one_at_a_time_never_moves_held_out_text() -> None:
    names = sorted(TOPICS)
    files = topic_files(names[:20])  # already more than MIN_RULE_PIECES pieces: the hash rule alone decides
    assert sum(len(_pieces(p, d)) for p, d in files.items()) >= MIN_RULE_PIECES
    before = held_out(files, val_fraction=0.1, block_size=BLOCK)
    for name in names[20:60]:
        files |= topic_files([name], prefix="more/")
        after = held_out(files, val_fraction=0.1, block_size=BLOCK)
        assert {p: r for p, r in after.items() if p in before} == before, name  # nothing moved, either way
        before = after


def test_a_small_corpus_that_has_a_twin_keeps_the_twins_together() -> None:
    text = TOPICS["typesseq"].encode()
    files = {"a.md": text, "b.md": text} | {f"small/{i}.md": TOPICS[n].encode()[:300]
                                             for i, n in enumerate(sorted(TOPICS)[:10])}
    ranges = held_out(files, val_fraction=0.1, block_size=BLOCK)
    assert ranges.get("a.md", []) == ranges.get("b.md", [])


def test_crlf_text_is_cut_at_its_paragraphs_too() -> None:
    text = TOPICS["typesseq"].encode()
    assert len(_units(text.replace(b"\n", b"\r\n"))) == len(_units(text)) > 10


def test_an_edit_moves_at_most_the_piece_it_falls_in() -> None:
    files = topic_files(sorted(TOPICS)[:40])
    path = max(files, key=lambda p: len(files[p]))
    text = files[path]
    middle = text.index(b"\n\n", len(text) // 2)
    edited = files | {path: text[:middle] + b" An added sentence." + text[middle:]}
    kept = held_text(files) & held_text(edited)
    assert len(held_text(files) - kept) <= 1


def test_one_huge_file_keeps_the_share_near_val_fraction() -> None:
    changelog = b"".join(TOPICS[name].encode() for name in sorted(TOPICS))[:200_000]
    files = {"CHANGELOG.md": changelog, "README.md": TOPICS["if"].encode()}
    c = build_corpus(files, val_fraction=0.1, block_size=256)
    total = c.train.numel() + c.val.numel()
    assert 0.05 <= c.val.numel() / total <= 0.15, c.val.numel() / total


def test_text_without_paragraphs_is_split_inside_to_the_exact_share() -> None:
    c = build_corpus({"fox.txt": TEXT}, val_fraction=0.1, block_size=BLOCK)
    assert c.train_files == c.val_files == ("fox.txt",)
    n_val = math.ceil(0.1 * len(TEXT))
    assert c.val.numel() == n_val and c.train.numel() == len(TEXT) - n_val
    assert c.train.dtype == torch.uint8


def test_identical_text_never_lands_on_both_sides() -> None:
    files = topic_files(sorted(TOPICS)[:40])
    copies = files | {f"copy/{p}": data for p, data in files.items()}
    ranges = held_out(copies, val_fraction=0.1, block_size=BLOCK)
    for path in files:
        assert ranges.get(path, []) == ranges.get(f"copy/{path}", []), path


def test_tiny_corpora_still_hold_out_enough_for_one_block() -> None:
    c = build_corpus({"big.md": b"a" * 5000, "small.md": b"b" * 10}, block_size=BLOCK)
    assert c.val.numel() > BLOCK + 1 and c.train.numel() > BLOCK + 1
    assert c.val.numel() + c.train.numel() == 5010


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


def test_val_fingerprint_follows_the_held_out_bytes_only() -> None:
    files = topic_files(sorted(TOPICS)[:40])
    base = build_corpus(files, block_size=BLOCK)
    held = held_out(files, val_fraction=0.1, block_size=BLOCK)
    path = next(p for p in files if p not in held)  # a file wholly in train
    edited = build_corpus(files | {path: files[path] + b"\n\nMore training text.\n"}, block_size=BLOCK)
    assert edited.fingerprint() != base.fingerprint()
    assert edited.val_fingerprint(BLOCK) == base.val_fingerprint(BLOCK)
    assert base.val_fingerprint(BLOCK) != base.val_fingerprint(2 * BLOCK)  # other windows, other figure


def test_eval_windows_cover_a_small_split_and_sample_a_large_one_evenly() -> None:
    assert eval_starts(10 * BLOCK + 1, BLOCK) == [i * BLOCK for i in range(10)]
    assert eval_starts(BLOCK, BLOCK) == []
    starts = eval_starts(10_000 * BLOCK, BLOCK)
    assert len(starts) == EVAL_WINDOWS and starts[0] == 0 and starts[-1] == 10_000 * BLOCK - BLOCK - 1
    assert starts == sorted(set(starts))


# --- training ----------------------------------------------------------------------------------------


def test_loss_goes_down_on_a_repetitive_corpus(first: TrainResult) -> None:
    assert (first.start_iteration, first.end_iteration, len(first.losses)) == (0, 60, 60)
    assert first.val_loss_before is not None and abs(first.val_loss_before - LN_VOCAB) < 0.2
    assert sum(first.losses[-10:]) / 10 < sum(first.losses[:10]) / 10 - 1.5
    assert first.val_loss_after < first.val_loss_before - 1.5
    assert first.train_loss < LN_VOCAB - 1.5
    assert first.learning_rate == get_lr(59, tiny_train_config(60), 60)
    assert first.tokens_per_s > 0 and first.elapsed_s > 0


def test_resumed_session_continues_and_runs_all_its_iterations(corpus, first: TrainResult) -> None:
    second = train(TINY, tiny_train_config(25), corpus, resume=load_state(save_state(first.state)))
    assert second.start_iteration == 60 and second.end_iteration == 85 and len(second.losses) == 25
    assert second.state["iteration"] == 85
    last = sum(first.losses[-5:]) / 5
    assert second.losses[0] < LN_VOCAB - 2 and abs(second.losses[0] - last) < 0.5
    # the same weights and the same fixed eval batches give the same estimate in both sessions
    assert second.val_loss_before == first.val_loss_after
    assert second.learning_rate == get_lr(84, tiny_train_config(25), 85)  # schedule uses the global iteration


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
    with pytest.raises(ValueError, match=r"model shape differs \(n_embd 32 -> 64\)"):
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
    with pytest.raises(ValueError, match="must not be negative"):
        tiny_train_config(5, cooldown_iters=-1)


def test_lr_warms_up_once_stays_at_the_peak_and_cools_down_at_each_sessions_end() -> None:
    cfg = TrainConfig(max_iters=1, learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, cooldown_iters=20)
    warm = [get_lr(i, cfg, 1000) for i in range(10)]
    assert warm == sorted(warm) and warm[-1] < cfg.learning_rate
    assert get_lr(10, cfg, 1000) == get_lr(979, cfg, 1000) == pytest.approx(cfg.learning_rate)
    cool = [get_lr(i, cfg, 1000) for i in range(980, 1000)]
    assert cool == sorted(cool, reverse=True) and cool[-1] == pytest.approx(cfg.min_lr)
    # a month later the lineage is still at the peak: no global decay horizon
    assert get_lr(10_000_000, cfg, 20_000_000) == pytest.approx(cfg.learning_rate)


@pytest.fixture
def deterministic() -> Iterator[None]:
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(was)


@pytest.mark.parametrize(("dropout", "horizon"), [(0.0, 0), (0.1, 0), (0.1, 8)])
def test_two_sessions_of_n_equal_one_session_of_2n(corpus, deterministic: None, dropout: float,
                                                   horizon: int) -> None:
    config = replace(TINY, n_layer=2, dropout=dropout)
    whole = train(config, tiny_train_config(20, average_horizon=horizon), corpus)
    a = train(config, tiny_train_config(10, average_horizon=horizon), corpus)
    b = train(config, tiny_train_config(10, average_horizon=horizon), corpus, resume=load_state(save_state(a.state)))
    assert a.losses + b.losses == whole.losses
    for part in ("model", "online") if horizon else ("model",):
        weights = whole.state["model"] if part == "model" else whole.state["online"]["model"]
        theirs = b.state["model"] if part == "model" else b.state["online"]["model"]
        for key, tensor in weights.items():
            assert torch.equal(theirs[key], tensor), (part, key)
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

    stopped = train(TINY, TrainConfig(max_iters=50, batch_size=4), corpus, progress_every=5,
                    should_stop=stop_after_two_reports)
    assert stopped.stopped_early and stopped.end_iteration == 10 and len(stopped.losses) == 10
    assert stopped.state["iteration"] == 10
    resumed = train(TINY, TrainConfig(max_iters=5, batch_size=4), corpus, resume=stopped.state)
    assert (resumed.start_iteration, resumed.end_iteration, resumed.stopped_early) == (10, 15, False)


def stop_at(iteration: int):
    """A should_stop that ends the call once `iteration` session iterations are done (progress_every=5)."""
    calls: list[int] = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) * 5 >= iteration

    return should_stop


def test_a_session_interrupted_in_its_cooldown_resumes_bit_identically(corpus, deterministic: None) -> None:
    cfg = tiny_train_config(20, cooldown_iters=8)
    whole = train(TINY, cfg, corpus)
    a = train(TINY, cfg, corpus, progress_every=5, should_stop=stop_at(15))  # 3 iterations into the cooldown
    assert a.end_iteration == 15 and a.learning_rate < cfg.learning_rate
    b = train(TINY, replace(cfg, max_iters=5), corpus, resume=load_state(save_state(a.state)))
    assert a.losses + b.losses == whole.losses
    for key, tensor in whole.state["model"].items():
        assert torch.equal(b.state["model"][key], tensor), key
    assert b.learning_rate == whole.learning_rate == pytest.approx(cfg.min_lr)


def test_the_next_session_goes_on_from_the_cooled_weights_at_the_peak_rate(corpus) -> None:
    cooled = train(TINY, tiny_train_config(40, cooldown_iters=10), corpus)
    assert cooled.state["iteration"] == 40 and cooled.learning_rate == pytest.approx(3e-4)
    seen: list[Progress] = []
    nxt = train(TINY, tiny_train_config(20, cooldown_iters=5, seed=7), corpus, resume=cooled.state,
                on_progress=seen.append, progress_every=1)
    assert (nxt.start_iteration, nxt.end_iteration) == (40, 60)
    assert seen[0].lr == pytest.approx(3e-3)  # no second warmup, no decay horizon: the peak again
    assert nxt.val_loss_before == cooled.val_loss_after  # the very weights that were committed
    assert nxt.learning_rate == pytest.approx(3e-4)  # cooled to min_lr at its own end


def test_another_seed_or_other_text_starts_a_new_stream(corpus, first: TrainResult) -> None:
    same = train(TINY, tiny_train_config(10), corpus, resume=first.state)
    again = train(TINY, tiny_train_config(10), corpus, resume=first.state)
    other = train(TINY, tiny_train_config(10, seed=99), corpus, resume=first.state)
    assert same.losses == again.losses  # one stream, restored exactly
    assert other.losses != same.losses  # another session's seed: another trajectory from the same parent
    assert same_stream(first.state, tiny_train_config(10), corpus)
    edited = build_corpus({"fox.txt": TEXT + b"and a new sentence at the end. "}, block_size=BLOCK)
    assert not same_stream(first.state, tiny_train_config(10), edited)  # a sampler position of other bytes
    warm = train(TINY, tiny_train_config(10), edited, resume=first.state)
    assert warm.val_loss_before < LN_VOCAB - 1.5  # the weights carry over all the same


def test_evaluate_reproduces_the_reported_val_loss_whatever_the_batch_size(corpus, first: TrainResult) -> None:
    assert evaluate(TINY, first.state, corpus, device="cpu") == pytest.approx(first.val_loss_after, abs=1e-6)
    wider = train(TINY, tiny_train_config(1, batch_size=16), corpus, resume=first.state)
    assert wider.val_loss_before == pytest.approx(first.val_loss_after, abs=1e-6)
    with pytest.raises(ValueError, match="model shape differs"):
        evaluate(replace(TINY, n_embd=64), first.state, corpus, device="cpu")


def test_another_dropout_goes_on_from_the_same_weights(corpus, first: TrainResult) -> None:
    wetter = replace(TINY, dropout=0.1)  # no weight depends on it: the same lineage
    assert evaluate(wetter, first.state, corpus, device="cpu") == pytest.approx(first.val_loss_after, abs=1e-6)
    going_on = train(wetter, tiny_train_config(5), corpus, resume=first.state)
    assert going_on.start_iteration == 60 and going_on.state["model_config"]["dropout"] == 0.1


# --- served weights: a running average -----------------------------------------------------------------


def test_average_decay_follows_the_lineage_age_then_the_horizon() -> None:
    assert average_decay(0, 0) == average_decay(10**6, 0) == 0.0  # no average: the live weights
    assert average_decay(0, 50) == pytest.approx(0.1)  # a young lineage: the average is nearly the live weights
    assert average_decay(80, 50) == pytest.approx(81 / 90)
    assert average_decay(10**6, 50) == pytest.approx(1 - 1 / 50)
    with pytest.raises(ValueError, match="average_horizon"):
        tiny_train_config(5, average_horizon=-1)


def test_the_served_weights_are_the_average_and_training_goes_on_from_the_live_ones(corpus) -> None:
    averaged = train(TINY, tiny_train_config(40, average_horizon=10), corpus)
    served, live = averaged.state["model"], averaged.state["online"]["model"]
    assert any(not torch.equal(served[k], live[k]) for k in served)
    # what is reported, evaluated and compared is the average
    assert evaluate(TINY, averaged.state, corpus, device="cpu") == pytest.approx(averaged.val_loss_after, abs=1e-6)
    nxt = train(TINY, tiny_train_config(1, average_horizon=10, learning_rate=1e-12, min_lr=0.0), corpus,
                resume=averaged.state)
    assert nxt.val_loss_before == pytest.approx(averaged.val_loss_after, abs=1e-6)
    for key, tensor in nxt.state["online"]["model"].items():  # a step of ~0 from the live weights, not the served
        assert torch.allclose(tensor, live[key], atol=1e-6), key
    # turning the average off goes on from the served weights: nothing published is lost
    off = train(TINY, tiny_train_config(1, learning_rate=1e-12, min_lr=0.0), corpus, resume=averaged.state)
    assert "online" not in off.state
    assert off.val_loss_before == pytest.approx(averaged.val_loss_after, abs=1e-6)


def test_a_payload_whose_weights_do_not_fit_is_a_value_error_not_a_crash(corpus, first: TrainResult) -> None:
    with pytest.raises(ValueError, match="'online' holds no model state"):
        load_state(save_state({**first.state, "online": {"model": 3}}))
    served = first.state["model"]
    for bad in ({"online": {"model": {}}}, {"online": {"model": {**served, "extra": torch.zeros(1)}}},
                {"online": {"model": {k: v.flatten()[:1] for k, v in served.items()}}},
                {"model": {k: v for k, v in served.items() if k != "lm_head.weight"}}):
        payload = load_state(save_state({**first.state, **bad}))  # reads: the shapes need the model config
        with pytest.raises(ValueError, match="weights do not fit the model"):
            train(TINY, tiny_train_config(1, average_horizon=4), corpus, resume=payload)
        with pytest.raises(ValueError, match="weights do not fit the model"):
            evaluate(TINY, payload, corpus, device="cpu")


def test_losses_are_kept_a_chunk_at_a_time_and_none_is_lost(corpus, deterministic: None,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory for the loss curve does not grow with max_iters up front (a buffer of 1e9 floats was 4 GB)."""
    whole = train(TINY, tiny_train_config(10), corpus)
    import workers.trainer.train as train_module

    monkeypatch.setattr(train_module, "LOSS_CHUNK", 3)
    seen: list[Progress] = []
    chunked = train(TINY, tiny_train_config(10), corpus, on_progress=seen.append, progress_every=1)
    assert chunked.losses == whole.losses and len(chunked.losses) == 10
    assert [p.loss for p in seen] == pytest.approx(whole.losses)
