"""A small GPT in one readable file, after karpathy/nanoGPT's model.py.

The shape of the network is fixed by `ModelConfig`; a checkpoint stores `ModelConfig.to_dict()` so a
later session can rebuild exactly the same network before loading its weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

ACTIVATIONS = {"gelu": "none", "gelu_tanh": "tanh"}  # name -> nn.GELU's `approximate`


@dataclass(frozen=True)
class ModelConfig:
    """Network shape. The defaults are the seed workflow's `ci` profile (4 layers, 4 heads, 256 wide)."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    block_size: int = 256  # context length in tokens
    vocab_size: int = 256  # 256 = one token per byte (see data.TOKENIZER_ID)
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm, as GPT-2
    activation: str = "gelu"  # "gelu": exact; "gelu_tanh": the tanh approximation GPT-2's own weights use

    def __post_init__(self) -> None:
        # Configs come from users' YAML, so fail here with a readable message, not deep inside torch.
        for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"model config: {name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"model config: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if not isinstance(self.dropout, int | float) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model config: dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.bias, bool):
            raise ValueError(f"model config: bias must be true or false, got {self.bias!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"model config: activation must be one of {', '.join(ACTIVATIONS)}, got "
                             f"{self.activation!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """Build from a mapping, ignoring unknown keys (old metadata carries extra fields)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        # query, key and value for all heads in one matmul
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        # (B, T, C) -> (B, n_head, T, head_size)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        # The fused kernel (flash / memory-efficient on CUDA) applies the causal mask itself.
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def decode(self, x: Tensor, cache: LayerCache) -> Tensor:
        """Attention for new positions `x` given the keys and values of the earlier ones (sampling): the
        new keys and values go into `cache`, and each new query sees every cached position before it."""
        B, T, C = x.size()
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                   for t in self.c_attn(x).split(self.n_embd, dim=2))
        past = cache.length
        k, v = cache.append(k, v)
        # A prefill into an empty cache is the usual causal mask; one new token attends to everything.
        causal = T > 1
        if causal and past:
            raise ValueError("a prefill must start from an empty cache")
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate=ACTIVATIONS[config.activation])
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: residual stream + attention, then + MLP."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def decode(self, x: Tensor, cache: LayerCache) -> Tensor:
        x = x + self.attn.decode(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class LayerCache:
    """One layer's keys and values so far, in buffers of the full context (no reallocation per token)."""

    def __init__(self, batch: int, n_head: int, block_size: int, head_size: int, like: Tensor) -> None:
        self.k = like.new_zeros(batch, n_head, block_size, head_size)
        self.v = like.new_zeros(batch, n_head, block_size, head_size)
        self.length = 0

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        end = self.length + k.size(2)
        if end > self.k.size(2):
            raise ValueError(f"the cache holds {self.k.size(2)} positions; {end} asked")
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class GPT(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying (Press & Wolf 2017): the input embedding and the output projection share one
        # matrix, which saves parameters and helps small models.
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer) so the residual stream's
        # variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        """Parameter count; the tied embedding is counted once."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self) -> float:
        """FLOPs per token of one forward+backward pass: 6*N + 12*L*H*Q*T (nanoGPT's estimate_mfu)."""
        cfg = self.config
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
        return float(6 * self.num_params() + 12 * L * H * Q * T)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Logits for every position, shape (B, T, vocab); with targets also the mean cross-entropy."""
        _, t = idx.size()
        if t > self.config.block_size:
            raise ValueError(f"sequence of length {t} is longer than block_size {self.config.block_size}")
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def new_cache(self, batch: int = 1) -> list[LayerCache]:
        cfg = self.config
        like = self.lm_head.weight
        return [LayerCache(batch, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head, like)
                for _ in range(cfg.n_layer)]

    @torch.no_grad()
    def decode(self, idx: Tensor, cache: list[LayerCache]) -> Tensor:
        """Logits of the last position after feeding `idx` (B, T) at the positions after those cached:
        the whole prompt once, then one token at a time, each costing one position's work."""
        start = cache[0].length
        t = idx.size(1)
        if start + t > self.config.block_size:
            raise ValueError(f"positions {start}..{start + t} run past block_size {self.config.block_size}")
        pos = torch.arange(start, start + t, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block, layer in zip(self.transformer.h, cache, strict=True):
            x = block.decode(x, layer)
        return self.lm_head(self.transformer.ln_f(x[:, -1:, :]))[:, -1, :]
