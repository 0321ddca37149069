"""The training loop: one session of `max_iters` iterations, fresh or resumed from a payload.

Importable and free of I/O: data comes in as a Corpus, the checkpoint goes out as a dict (see
checkpoint.py; `save_state` / `load_state` turn it into bytes and back). The payload holds the served
weights (and the live ones, when they differ), optimizer moments, the global iteration, the RNG state used
by dropout and the batch sampler's generator.

Streams: a resumed call restores the RNG and the sampler only when it continues the same stream (same
data fingerprint and same seed); otherwise it draws new ones from its own seed. So an interrupted session
resumed from its own in-session checkpoint continues bit for bit (on the CPU with deterministic
algorithms, two calls of N iterations equal one of 2N), while two different sessions, which get
different seeds, never replay one trajectory, and a session on edited text never reuses a sampler
position that meant other bytes.

Schedule, for training that never ends: a linear warmup over the lineage's first `warmup_iters`
iterations, then the peak rate for good, with no decay horizon. What a session serves (evaluates, stores,
commits) is a running average of the live weights (`average_horizon`; Polyak averaging, as in Sanyal et
al. 2023, "Early Weight Averaging meets High Learning Rates for LLM Pre-training"), and training goes on
from the live weights and their optimizer moments. The average does what a cooldown does at the end of
a run, without bending the run: the rate, the average and the optimizer carry on across sessions as in
one run, whatever the sessions' lengths; only the data stream is each session's own (see Streams).
A per-session cooldown (`cooldown_iters`, 1 - sqrt to `min_lr`, Hägele et al. 2024) is still there for
whoever wants one, but off by default: bench/continual measured five sessions with a 10 % cooldown
each at 0.950-0.967 of one uninterrupted run, because every cooldown is undone by the next session's
return to the peak rate.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from workers.trainer.checkpoint import (
    CHECKPOINT_FORMAT,
    check_model_config,
    check_payload,
    load_state,
    save_state,
    to_cpu,
)
from workers.trainer.data import Corpus, eval_starts
from workers.trainer.device import autocast, cuda_speedups, peak_flops, resolve_device
from workers.trainer.group import SOLO, Group
from workers.trainer.model import GPT, ModelConfig
from workers.trainer.tokenizer import BYTES_ID

__all__ = ["Progress", "Snapshot", "TrainConfig", "TrainResult", "evaluate", "get_lr", "load_state", "save_state",
           "train"]

SAMPLER_KIND = "uniform-random-blocks"
EVAL_BATCH = 16  # windows per forward pass when evaluating; fixed, so figures never depend on batch_size


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings for one session (nanoGPT's defaults, scaled to small models)."""

    max_iters: int  # iterations for THIS session, counted from the resume point
    batch_size: int = 8
    learning_rate: float = 6e-4  # peak, reached after warmup and held while the lineage goes on
    min_lr: float = 6e-5  # where each session's cooldown ends (~learning_rate / 10)
    warmup_iters: int = 100  # in GLOBAL iterations: only a new lineage warms up
    cooldown_iters: int = 0  # the session's last iterations, decaying to min_lr; counted to the session's end
    weight_decay: float = 0.1  # applied to 2-D weights only
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    beta1: float = 0.9
    beta2: float = 0.95
    seed: int = 1337  # initial weights, dropout and the sampler of a new stream; sessions derive their own
    average_horizon: int = 0  # iterations the served weights average over (see average_decay); 0: no average
    device: str = "auto"  # "auto" -> cuda if available else cpu
    # Sequences per forward pass in each process; the rest of its share of the batch is accumulated, so the
    # global batch stays `batch_size` on any card and any number of processes. None: the whole share at once.
    micro_batch_size: int | None = None
    compile: bool = False  # torch.compile the training forward and backward (pays on CUDA; slow to start)

    def __post_init__(self) -> None:
        for name in ("max_iters", "batch_size", "micro_batch_size"):
            value = getattr(self, name)
            if name == "micro_batch_size" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"train config: {name} must be a positive integer, got {value!r}")
        if self.warmup_iters < 0 or self.cooldown_iters < 0:
            raise ValueError(
                f"train config: warmup_iters and cooldown_iters must not be negative, got "
                f"{self.warmup_iters} and {self.cooldown_iters}"
            )
        if not 0 <= self.min_lr <= self.learning_rate:
            raise ValueError(
                f"train config: need 0 <= min_lr <= learning_rate, got {self.min_lr} and {self.learning_rate}"
            )
        if isinstance(self.average_horizon, bool) or not isinstance(self.average_horizon, int) \
                or self.average_horizon < 0:
            raise ValueError(f"train config: average_horizon must be 0 or more, got {self.average_horizon!r}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("train config: weight_decay and grad_clip must not be negative")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"train config: betas must be in [0, 1), got {self.beta1}, {self.beta2}")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError as exc:
                raise ValueError(f"train config: unknown device {self.device!r}") from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Progress:
    """A progress report, built only every `progress_every` iterations (and at the last one)."""

    iteration: int  # global iterations completed
    session_iteration: int  # iterations completed in this session
    max_iters: int
    loss: float  # training loss of the latest iteration
    lr: float
    tokens_per_s: float  # since the session's loop started
    elapsed_s: float


@dataclass(frozen=True)
class TrainResult:
    state: dict[str, Any]  # the checkpoint payload, tensors on the CPU
    start_iteration: int  # global iteration the session started from (0 when fresh)
    end_iteration: int  # start_iteration + iterations actually run
    losses: list[float]  # training loss of every iteration of this session, in order
    train_loss: float  # estimated on the train split at the end
    val_loss_before: float | None  # the starting weights on the val split (also for a fresh model)
    val_loss_after: float
    tokens_per_s: float  # training loop throughput (evaluation excluded)
    elapsed_s: float  # whole call, evaluation included
    learning_rate: float  # lr at the last iteration
    device: str = "cpu"
    mfu: float | None = None  # model FLOPs utilisation against the GPU's dense bf16 peak; None on CPU
    stopped_early: bool = False  # `should_stop` ended the session before max_iters
    world_size: int = 1  # processes that trained it (workers/trainer/group.py)


def _stable_lr(iteration: int, cfg: TrainConfig) -> float:
    if iteration < cfg.warmup_iters:
        return cfg.learning_rate * (iteration + 1) / (cfg.warmup_iters + 1)
    return cfg.learning_rate


def get_lr(iteration: int, cfg: TrainConfig, session_end: int) -> float:
    """Warmup, then the peak for good; over the last `cooldown_iters` before `session_end`, 1 - sqrt decay
    from the stable rate to min_lr (the shape Hägele et al. found best), reaching it at the last step."""
    cool_from = session_end - cfg.cooldown_iters
    if cfg.cooldown_iters <= 0 or iteration < cool_from:
        return _stable_lr(iteration, cfg)
    top = _stable_lr(cool_from, cfg)
    done = (iteration - cool_from + 1) / cfg.cooldown_iters
    return cfg.min_lr + (top - cfg.min_lr) * (1.0 - math.sqrt(min(done, 1.0)))


def average_decay(iteration: int, horizon: int) -> float:
    """How much of the running average each step keeps: it spans about a ninth of the lineage's age while
    that is short (young weights are soon stale), then `horizon` iterations. 0 makes it the live weights."""
    if horizon <= 0:
        return 0.0
    return min(1.0 - 1.0 / horizon, (1 + iteration) / (10 + iteration))


def _get_batch(
    data: Tensor, block: int, batch: int, gen: torch.Generator, device: torch.device, rows: tuple[int, int],
) -> tuple[Tensor, Tensor]:
    """`batch` random windows of block + 1 tokens, of which the `rows` [lo, hi): inputs and the same shifted by
    one as targets (a rank's share: every rank draws the whole batch, so the sampler moves alike on all).

    On CUDA `data` lives on the device: the window starts go over in one small non-blocking copy and the
    gather runs there, so the host never waits and runs ahead, preparing the next batches while the GPU
    trains on this one."""
    ix = torch.randint(data.numel() - block, (batch,), generator=gen)[rows[0]:rows[1]]
    if device.type == "cuda":
        ix = ix.pin_memory().to(device, non_blocking=True)
        chunk = data[ix.unsqueeze(1) + torch.arange(block + 1, device=device)].long()
    else:
        chunk = data[ix.unsqueeze(1) + torch.arange(block + 1)].long()
    return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()


Named = list[tuple[str, torch.nn.Parameter]]


def _parameter_groups(model: GPT) -> tuple[Named, Named]:
    """(decayed, not decayed): matrices and embeddings, then biases and LayerNorm gains, in the order the
    optimizer numbers its state."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    return [(n, p) for n, p in named if p.dim() >= 2], [(n, p) for n, p in named if p.dim() < 2]


def optimizer_order(model_config: ModelConfig) -> list[str]:
    """The parameter names in the order the optimizer's saved state numbers them (a payload's "optimizer"
    keys its moments by position), from a model on the meta device."""
    with torch.device("meta"):
        decayed, other = _parameter_groups(GPT(model_config))
    return [name for name, _ in (*decayed, *other)]


def _configure_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only, not on biases and LayerNorm gains."""
    decayed, other = _parameter_groups(model)
    groups = [
        {"params": [p for _, p in decayed], "weight_decay": cfg.weight_decay},
        {"params": [p for _, p in other], "weight_decay": 0.0},
    ]
    fused = device.type == "cuda"  # one kernel for all parameters; on the CPU the plain loop is fine
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=fused or None)


@torch.no_grad()
def _estimate_loss(
    model: GPT, data: Tensor, device: torch.device, token_bytes: Tensor | None = None, group: Group = SOLO,
) -> float:
    """Nats per byte over the split's fixed windows (data.eval_starts): the nats of every predicted token
    summed, over the bytes those tokens stand for (`token_bytes`; one each when tokens are bytes, where this
    is the mean loss per token). Deterministic, the same windows for any batch size or seed, and in one
    unit for every tokenizer, so figures compare like for like. In a group each rank reads its share of the
    windows and the sums are added up."""
    block = model.config.block_size
    starts = torch.tensor(eval_starts(data.numel(), block), dtype=torch.long)[group.rank::group.world]
    was_training = model.training
    model.eval()
    nats = torch.zeros((), device=device, dtype=torch.float64)
    n_bytes = torch.zeros((), device=device, dtype=torch.float64)
    sizes = token_bytes.to(device) if token_bytes is not None else None
    for batch in starts.split(EVAL_BATCH):
        chunk = data[batch.unsqueeze(1) + torch.arange(block + 1)].long().to(device)
        targets = chunk[:, 1:]
        with autocast(device):
            logits, _ = model(chunk[:, :-1])
            per_token = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
        nats += per_token.double().sum()
        n_bytes += sizes[targets].double().sum() if sizes is not None else targets.numel()
    model.train(was_training)
    group.sum_(nats)
    group.sum_(n_bytes)
    return (nats / n_bytes).item()


def evaluate(model_config: ModelConfig, payload: Mapping[str, Any], corpus: Corpus, *, device: str = "auto") -> float:
    """The val loss (nats per byte) of a stored checkpoint's weights on the corpus's validation split, the
    windows `train` reports on.

    For choosing between checkpoints measured on an older validation set: it costs one forward pass per
    EVAL_BATCH windows and leaves the global RNG alone.
    """
    check_payload(payload)
    check_model_config(payload, model_config)
    where = resolve_device(device)
    data = corpus.val
    if data.numel() <= model_config.block_size + 1:
        raise ValueError(f"evaluation needs more than {model_config.block_size + 1} tokens, got {data.numel()}")
    with torch.random.fork_rng(devices=[where] if where.type == "cuda" else []), cuda_speedups(where):
        model = GPT(model_config)
        model.load_state_dict(payload["model"])
        return _estimate_loss(model.to(where), data, where, corpus.tokenizer.token_bytes)


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    corpus: Corpus,
    *,
    resume: Mapping[str, Any] | None = None,
    init_weights: Mapping[str, Tensor] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    progress_every: int = 10,
    should_stop: Callable[[], bool] | None = None,
    on_checkpoint: OnCheckpoint | None = None,
    checkpoint_every_s: float = 600.0,
    group: Group = SOLO,
) -> TrainResult:
    """Run `train_config.max_iters` iterations, from `resume` (a payload), or from fresh weights: random, or
`init_weights` (a pretrained model's state dict; a new lineage, so warmup and a new optimizer).

    `on_checkpoint` receives an in-session Snapshot at most every `checkpoint_every_s`, checked at
    progress boundaries; resuming from its payload continues exactly as this call would have.
    In a `group` (one rank of several, see group.py) only rank 0's hooks count: its stop and snapshot
    decisions reach every rank at the same iteration, and it alone builds snapshots and the result's state.
    """
    check_inputs(model_config, train_config, corpus, resume, progress_every, group.world)
    device = resolve_device(train_config.device)
    cuda_devices = [device] if device.type == "cuda" else []
    # fork_rng: seeding and dropout use the global RNGs; leave the caller's state as it was.
    with torch.random.fork_rng(devices=cuda_devices), cuda_speedups(device):
        hooks = _Hooks(on_progress, progress_every, should_stop, on_checkpoint, checkpoint_every_s)
        return _run(model_config, train_config, corpus, device, resume, hooks, init_weights, group)


def check_inputs(
    model_config: ModelConfig, train_config: TrainConfig, corpus: Corpus, resume: Mapping[str, Any] | None,
    progress_every: int = 10, world: int = 1,
) -> None:
    """What `train` refuses, as ValueErrors; also asked before a process group is launched for nothing."""
    if progress_every < 1:
        raise ValueError(f"progress_every must be at least 1, got {progress_every}")
    if train_config.batch_size < world:
        raise ValueError(f"batch_size {train_config.batch_size} cannot be shared by {world} processes; it must be "
                         f"at least the number of processes")
    block = model_config.block_size
    for name, split in (("train", corpus.train), ("val", corpus.val)):
        if split.numel() <= block + 1:
            raise ValueError(
                f"{name} split has {split.numel()} tokens; block_size {block} needs more than {block + 1}"
            )
    if model_config.vocab_size != corpus.tokenizer.vocab_size:
        raise ValueError(f"model vocab_size {model_config.vocab_size} is not the tokenizer's "
                         f"{corpus.tokenizer.vocab_size} ({corpus.tokenizer.id})")
    if resume is not None:
        check_payload(resume)
        check_model_config(resume, model_config)
        if resume.get("tokenizer", BYTES_ID) != corpus.tokenizer.id:
            raise ValueError(f"cannot resume: the checkpoint's tokenizer is {resume.get('tokenizer')}, "
                             f"the corpus's {corpus.tokenizer.id}")


LOSS_CHUNK = 4096  # losses held on the device between host copies


class _Losses:
    """Every iteration's training loss, kept on the device a chunk at a time: no host sync per iteration,
    and memory bounded whatever `max_iters` says (a buffer of max_iters floats was 4 GB at 1e9)."""

    def __init__(self, chunk: int, device: torch.device) -> None:
        self._chunk = torch.zeros(chunk, dtype=torch.float32, device=device)
        self._done: list[float] = []

    def put(self, k: int, loss: Tensor) -> None:
        at = k % self._chunk.numel()
        self._chunk[at] = loss.detach()
        if at == self._chunk.numel() - 1:
            self._done.extend(self._chunk.tolist())

    def value(self, k: int) -> float:
        return self._chunk[k % self._chunk.numel()].item()

    def first(self, n: int) -> list[float]:
        """The losses of iterations 0 .. n-1 (n at most one past the last put)."""
        flushed = len(self._done)
        return self._done[:n] if n <= flushed else [*self._done, *self._chunk[: n - flushed].tolist()]


@dataclass(frozen=True)
class Snapshot:
    """An in-session checkpoint: a resumable payload, this call's losses so far, and where it started."""

    payload: dict[str, Any]
    losses: list[float]
    val_loss_before: float


OnCheckpoint = Callable[[Snapshot], None]


@dataclass(frozen=True)
class _Hooks:
    on_progress: Callable[[Progress], None] | None
    progress_every: int
    should_stop: Callable[[], bool] | None
    on_checkpoint: OnCheckpoint | None
    checkpoint_every_s: float


def _payload(
    model: GPT, served: GPT, optimizer: torch.optim.Optimizer, model_config: ModelConfig, cfg: TrainConfig,
    corpus: Corpus, iteration: int, rng: dict[str, Any], sampler: torch.Generator, batches: int,
) -> dict[str, Any]:
    """Everything a later call needs (see the module docstring)."""
    extra = {} if served is model else {"online": {"model": to_cpu(model.state_dict())}}
    return {
        "format": CHECKPOINT_FORMAT,
        "model": to_cpu(served.state_dict()),
        **extra,
        "optimizer": to_cpu(optimizer.state_dict()),
        "model_config": model_config.to_dict(),
        "train_config": cfg.to_dict(),
        "iteration": iteration,
        "tokenizer": corpus.tokenizer.id,
        **({"tokenizer_json": document} if (document := corpus.tokenizer.to_json()) is not None else {}),
        "rng": rng,
        "sampler": {"kind": SAMPLER_KIND, "generator": sampler.get_state(), "batches": batches},
        "corpus_fingerprint": corpus.fingerprint(),
    }


def _rng_state(device: torch.device) -> dict[str, Any]:
    rng: dict[str, Any] = {"torch_cpu": torch.get_rng_state(), "cuda": []}
    if device.type == "cuda":
        rng["cuda"] = [torch.cuda.get_rng_state(device)]
    return rng


def same_stream(resume: Mapping[str, Any], cfg: TrainConfig, corpus: Corpus) -> bool:
    """Whether `resume` continues this call's stream: same bytes in the same split, and the same seed."""
    saved = resume.get("train_config")
    return (
        resume.get("corpus_fingerprint") == corpus.fingerprint()
        and isinstance(saved, Mapping) and saved.get("seed") == cfg.seed
    )


def _run(
    model_config: ModelConfig,
    cfg: TrainConfig,
    corpus: Corpus,
    device: torch.device,
    resume: Mapping[str, Any] | None,
    hooks: _Hooks,
    init_weights: Mapping[str, Tensor] | None = None,
    group: Group = SOLO,
) -> TrainResult:
    t_call = time.perf_counter()
    # The initial weights (a resumed session overwrites them) and dropout draw from the global RNG of
    # the device; seed only the one we use, fork_rng in train() restores it afterwards.
    torch.default_generator.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.cuda.default_generators[device.index].manual_seed(cfg.seed)
    model = GPT(model_config)
    sampler = torch.Generator().manual_seed(cfg.seed)
    start, batches = 0, 0
    if init_weights is not None and resume is None:
        try:
            model.load_state_dict(init_weights)
        except RuntimeError as exc:  # names or shapes that do not fit: the caller's mistake, said plainly
            raise ValueError(f"the initial weights do not fit the model: {str(exc)[:300]}") from None
    if resume is not None:
        model.load_state_dict(resume["model"])  # the served weights; the live ones follow below
        start, batches = int(resume["iteration"]), int(resume["sampler"].get("batches", 0))
        if same_stream(resume, cfg, corpus):
            sampler.set_state(resume["sampler"]["generator"])
            torch.set_rng_state(resume["rng"]["torch_cpu"])
            if device.type == "cuda" and resume["rng"].get("cuda"):
                torch.cuda.set_rng_state(resume["rng"]["cuda"][0], device)
    if not group.leader:  # its own dropout masks; rank 0's RNG is what a checkpoint carries
        torch.manual_seed(cfg.seed + 7919 * group.rank)
    model.to(device)
    # `served` is what gets evaluated, stored and published: the running average of the weights, or the
    # live ones themselves when there is no average.
    served = model
    if cfg.average_horizon:
        served = copy.deepcopy(model).eval()
        online = resume.get("online") if resume is not None else None
        if isinstance(online, Mapping):
            model.load_state_dict(online["model"])
    model.train()
    optimizer = _configure_optimizer(model, cfg, device)
    if resume is not None:
        saved = to_cpu(resume["optimizer"])  # a copy: load_state_dict would alias and mutate it
        for pg, ours in zip(saved["param_groups"], optimizer.param_groups, strict=True):
            # This session's settings win over the saved ones (the device may differ, and so may the
            # config): the fused kernel exists only where we said, and the hyper-parameters are ours.
            for key in ("fused", "foreach", "betas", "weight_decay"):
                pg[key] = ours[key]
        optimizer.load_state_dict(saved)
    # What the backward pass runs through: DDP in a group, compiled where asked. Weights, evaluation and
    # checkpoints use `model` itself.
    stepper = group.wrap(model, device)
    if cfg.compile:
        stepper = torch.compile(stepper)
    train_data = corpus.train.to(device) if device.type == "cuda" else corpus.train

    token_bytes = corpus.tokenizer.token_bytes
    val_loss_before = _estimate_loss(served, corpus.val, device, token_bytes, group)
    live, averaged = list(model.parameters()), list(served.parameters())
    losses = _Losses(min(cfg.max_iters, LOSS_CHUNK), device)
    tokens_per_iter = cfg.batch_size * model_config.block_size
    session_end = start + cfg.max_iters  # an in-session resume's call ends where its session does
    rows = group.share(cfg.batch_size)
    micro = _micro_batches(rows, cfg.micro_batch_size)
    sync_free = getattr(stepper, "no_sync", None)  # DDP: accumulate without an all-reduce per micro-batch
    lr = get_lr(start, cfg, session_end)
    t_loop = last_checkpoint = time.perf_counter()
    ran = cfg.max_iters
    for k in range(cfg.max_iters):
        lr = get_lr(start + k, cfg, session_end)
        for pg in optimizer.param_groups:
            pg["lr"] = lr
        x, y = _get_batch(train_data, model_config.block_size, cfg.batch_size, sampler, device, rows)
        step_loss = torch.zeros((), device=device)
        for i, (lo, hi) in enumerate(micro):
            quiet = sync_free is not None and i < len(micro) - 1
            with sync_free() if quiet else contextlib.nullcontext(), autocast(device):
                _, loss = stepper(x[lo:hi], y[lo:hi])
            assert loss is not None
            # Weighted so that DDP's mean over ranks of the summed micro-batch gradients is the gradient of
            # the global batch's mean loss (shares may differ by one row). Alone, in one piece: loss * 1.
            share = (hi - lo) / cfg.batch_size
            (loss * (share * group.world)).backward()
            step_loss += loss.detach() * share
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if served is not model:
            with torch.no_grad():
                torch._foreach_lerp_(averaged, live, 1.0 - average_decay(start + k, cfg.average_horizon))
        losses.put(k, group.sum_(step_loss))
        done = k + 1
        if done % hooks.progress_every == 0 or done == cfg.max_iters:
            if hooks.on_progress is not None:
                value = losses.value(k)  # the only host sync, and only when reporting
                elapsed = time.perf_counter() - t_loop
                hooks.on_progress(
                    Progress(
                        start + done, done, cfg.max_iters, value, lr, done * tokens_per_iter / elapsed, elapsed
                    )
                )
            if done == cfg.max_iters:
                break
            stop, snapshot = group.decide([
                hooks.should_stop is not None and hooks.should_stop(),
                hooks.on_checkpoint is not None
                and time.perf_counter() - last_checkpoint >= hooks.checkpoint_every_s,
            ], device)
            if stop:
                ran = done  # cancelled or out of time: what was trained so far is a valid checkpoint
                break
            if snapshot:
                if hooks.on_checkpoint is not None:
                    hooks.on_checkpoint(Snapshot(
                        _payload(model, served, optimizer, model_config, cfg, corpus, start + done,
                                 _rng_state(device), sampler, batches + done),
                        losses.first(done), val_loss_before,
                    ))
                last_checkpoint = time.perf_counter()
    loss_list = losses.first(ran)  # waits for the device, so the timing below is honest
    loop_s = time.perf_counter() - t_loop
    # Capture the RNG states before evaluating, where a continuing single session would be.
    rng = _rng_state(device)
    train_loss = _estimate_loss(served, corpus.train, device, token_bytes, group)
    val_loss_after = _estimate_loss(served, corpus.val, device, token_bytes, group)
    end = start + ran
    state = _payload(model, served, optimizer, model_config, cfg, corpus, end, rng, sampler, batches + ran) \
        if group.leader else {}
    tokens_per_s = ran * tokens_per_iter / loop_s
    peak = peak_flops(device)
    return TrainResult(
        state=state,
        start_iteration=start,
        end_iteration=end,
        losses=loss_list,
        train_loss=train_loss,
        val_loss_before=val_loss_before,
        val_loss_after=val_loss_after,
        tokens_per_s=tokens_per_s,
        elapsed_s=time.perf_counter() - t_call,
        learning_rate=lr,
        device=str(device),
        mfu=tokens_per_s * model.flops_per_token() / (peak * group.world) if peak else None,
        stopped_early=ran < cfg.max_iters,
        world_size=group.world,
    )


def _micro_batches(rows: tuple[int, int], micro: int | None) -> list[tuple[int, int]]:
    """A rank's share [lo, hi) of the batch as forward passes of at most `micro` rows, relative to the share."""
    n = rows[1] - rows[0]
    step = micro or n
    return [(a, min(a + step, n)) for a in range(0, n, step)]
