"""The checkpoint payload: what a session hands to the next one, and how it becomes bytes.

A payload holds only tensors and plain data (dict, list, tuple, str, int, float, bool, None), so it
loads with `torch.load(weights_only=True)`: a checkpoint from the store can never run code.

    {"format": "retrain-checkpoint-v1", "model": state_dict, "optimizer": state_dict,
     "model_config": dict, "train_config": dict, "iteration": int, "tokenizer": str,
     "rng": {"torch_cpu": ByteTensor, "cuda": [ByteTensor, ...]},
     "sampler": {"kind": str, "generator": ByteTensor, "batches": int},
     "online": {"model": state_dict},
     "corpus_fingerprint": str}

"model" is what is served: evaluated, compared, published (the running average of the weights when the
profile keeps one). "online" holds the live weights that training goes on from, and the optimizer's
moments are theirs; without it (no average, or an older payload) training goes on from "model".
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from workers.trainer.model import GPT, ModelConfig

CHECKPOINT_FORMAT = "retrain-checkpoint-v1"
REQUIRED_KEYS = (
    "format",
    "model",
    "optimizer",
    "model_config",
    "train_config",
    "iteration",
    "rng",
    "sampler",
    "corpus_fingerprint",
)


def save_state(state: Mapping[str, Any]) -> bytes:
    """Serialize a payload with torch.save (zip format) into bytes for the checkpoint store."""
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    return buf.getvalue()


def load_state(blob: bytes) -> dict[str, Any]:
    """Read a payload from bytes; tensors land on the CPU. Any failure is a ValueError."""
    try:
        state = torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises many types (UnpicklingError, RuntimeError, EOFError, ...)
        raise ValueError(f"checkpoint could not be read: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint could not be read: expected a dict, got {type(state).__name__}")
    check_payload(state)
    return state


def check_payload(state: Mapping[str, Any]) -> None:
    """Raise ValueError unless `state` looks like a payload this version can resume from."""
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"checkpoint could not be read: format is {state.get('format')!r}, expected {CHECKPOINT_FORMAT!r}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint could not be read: missing {', '.join(missing)}")
    online = state.get("online")
    if online is not None and not (isinstance(online, Mapping) and isinstance(online.get("model"), Mapping)):
        raise ValueError("checkpoint could not be read: 'online' holds no model state")


NOT_SHAPE = ("dropout",)  # settings of the network that no weight depends on: today's config wins


def check_model_config(state: Mapping[str, Any], model_config: ModelConfig) -> None:
    """Weights only fit the network they were trained in: refuse to resume into another shape."""
    try:
        saved = ModelConfig.from_dict(state["model_config"]).to_dict()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot resume: the checkpoint's model config is not valid ({exc})") from exc
    ours = model_config.to_dict()
    diffs = ", ".join(f"{k} {v!r} -> {ours[k]!r}" for k, v in saved.items() if k not in NOT_SHAPE and ours[k] != v)
    if diffs:
        raise ValueError(f"cannot resume: the checkpoint's model shape differs ({diffs})")
    _check_weights(state, model_config)


def _check_weights(state: Mapping[str, Any], model_config: ModelConfig) -> None:
    """The weights themselves fit the network: the same names and shapes, for the served set and the live
    one. A payload whose config says one thing and whose tensors another is refused here, as a ValueError
    the caller turns into a note, never a RuntimeError deep inside load_state_dict."""
    expected = _weight_shapes(model_config)
    online = state.get("online")
    sets = [("model", state.get("model"))] + ([("online model", online.get("model"))] if online else [])
    for name, weights in sets:
        if not isinstance(weights, Mapping):
            raise ValueError(f"cannot resume: the checkpoint's {name} weights are not a state dict")
        found = {k: tuple(v.shape) if isinstance(v, Tensor) else None for k, v in weights.items()}
        if found != expected:
            wrong = sorted(set(found) ^ set(expected)) or sorted(k for k in expected if found[k] != expected[k])
            raise ValueError(
                f"cannot resume: the checkpoint's {name} weights do not fit the model ({', '.join(wrong[:3])})"
            )


def weight_shapes(model_config: ModelConfig) -> dict[str, tuple[int, ...]]:
    return dict(_weight_shapes(model_config))


@lru_cache(maxsize=16)
def _weight_shapes(model_config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the network's weights, from a model on the meta device (no memory, no init
    cost); cached, because choosing, evaluating and training each check the same payload."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in GPT(model_config).state_dict().items()}


def to_cpu(obj: Any, _memo: dict[tuple[Any, ...], Tensor] | None = None) -> Any:
    """Copy every tensor in a nested structure to fresh CPU memory.

    Copies, so that the payload never aliases live training tensors (or a caller's resume payload:
    Optimizer.load_state_dict keeps CPU tensors as they are and then updates them in place). Views of
    the same memory, such as the tied embedding and lm_head, stay shared so they are saved once.
    """
    memo = {} if _memo is None else _memo
    if isinstance(obj, Tensor):
        key = (obj.device, obj.data_ptr(), obj.dtype, tuple(obj.shape), tuple(obj.stride()))
        if obj.numel() == 0 or key not in memo:
            memo[key] = obj.detach().to("cpu", copy=True)
        return memo[key]
    if isinstance(obj, Mapping):
        return {k: to_cpu(v, memo) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v, memo) for v in obj)
    return obj
