"""Retrain's GPT as Hugging Face's GPT-2 and back: the same network, named and laid out differently.

The architecture is GPT-2's (pre-norm blocks, learned positions, tied embedding, 4x MLP). Three
differences in form only: GPT-2 stores its projections as `Conv1D`, the transpose of `nn.Linear`; our
activation is named `gelu` (exact, what sessions train with) or `gelu_tanh` (GPT-2's own weights'
`gelu_new`, kept for a lineage started from them); and GPT-2 always has biases, so a model trained with
`bias: false` is written with zero biases, which computes the same function. Pure tensors in, tensors out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from workers.trainer.model import ModelConfig

TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
LAYER_NORM_EPS = 1e-5  # torch's LayerNorm default, which ours uses
HF_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new"}  # ours -> config.json's activation_function
FROM_HF_ACTIVATION = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


def hf_config(model_config: ModelConfig) -> dict[str, Any]:
    """config.json of the GPT2LMHeadModel that computes what our model computes."""
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": model_config.vocab_size, "n_positions": model_config.block_size,
        "n_embd": model_config.n_embd, "n_layer": model_config.n_layer, "n_head": model_config.n_head,
        "n_inner": None, "activation_function": HF_ACTIVATION[model_config.activation],
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "initializer_range": 0.02,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True, "use_cache": True, "bos_token_id": None, "eos_token_id": None,
        "torch_dtype": "float32",
    }


def to_hf_tensors(model_config: ModelConfig, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """GPT-2's tensors (names, layouts, biases) from our served state dict; the tied lm_head is left to
    `tie_word_embeddings`, as Hugging Face writes GPT-2 itself."""
    out: dict[str, Tensor] = {}
    for name, tensor in state.items():
        if name == "lm_head.weight":
            continue
        value = tensor.detach().to("cpu", torch.float32)
        out[name] = (value.t() if name.endswith(TRANSPOSED) else value).contiguous().clone()
    if not model_config.bias:
        for name, value in list(out.items()):
            if name.endswith(".weight") and not name.endswith(("wte.weight", "wpe.weight")):
                width = value.shape[-1] if name.endswith(TRANSPOSED) else value.shape[0]
                out[name.removesuffix("weight") + "bias"] = torch.zeros(width)
    return out


def model_config_from_hf(config: Mapping[str, Any]) -> ModelConfig:
    """Our model config from a GPT-2 config.json. ValueError for anything our network cannot compute the
    same way."""
    if config.get("model_type") != "gpt2":
        raise ValueError(f"not a GPT-2 model: model_type is {config.get('model_type')!r}")
    activation = config.get("activation_function", "gelu_new")
    if activation not in FROM_HF_ACTIVATION:
        raise ValueError(f"activation {activation!r} is not one our model computes ({', '.join(FROM_HF_ACTIVATION)})")
    n_embd = int(config["n_embd"])
    if config.get("n_inner") not in (None, 4 * n_embd):
        raise ValueError(f"n_inner {config.get('n_inner')} is not 4 x n_embd")
    if abs(float(config.get("layer_norm_epsilon", LAYER_NORM_EPS)) - LAYER_NORM_EPS) > 1e-12:
        raise ValueError(f"layer_norm_epsilon {config.get('layer_norm_epsilon')} is not {LAYER_NORM_EPS}")
    if config.get("tie_word_embeddings", True) is False:
        raise ValueError("an untied lm_head cannot be continued (our embedding and output share one matrix)")
    return ModelConfig(
        n_layer=int(config["n_layer"]), n_head=int(config["n_head"]), n_embd=n_embd,
        block_size=int(config["n_positions"]), vocab_size=int(config["vocab_size"]), bias=True,
        activation=FROM_HF_ACTIVATION[activation],
    )


def state_from_hf(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our state dict from a GPT-2 checkpoint's tensors (names, layouts, the tied lm_head)."""
    state: dict[str, Tensor] = {}
    for name, tensor in tensors.items():
        ours = name if name.startswith(("transformer.", "lm_head.")) else f"transformer.{name}"
        if ours.endswith((".attn.bias", ".attn.masked_bias")):  # old GPT-2 files keep the causal mask
            continue
        value = tensor.detach().to("cpu", torch.float32)
        state[ours] = (value.t() if ours.endswith(TRANSPOSED) else value).contiguous()
    if "transformer.wte.weight" not in state:
        raise ValueError("the weights hold no token embedding (transformer.wte.weight)")
    state["lm_head.weight"] = state["transformer.wte.weight"]
    return state
