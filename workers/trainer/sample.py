"""Text from a trained model: temperature and top-k sampling over a key/value cache.

The prompt is fed once; every further token costs one position's work (GPT.decode), not a pass over
the whole context as nanoGPT's `generate` does. When the context is full, the cache is rebuilt from the
latest half of it (learned absolute positions leave no cheaper way), so generation runs on past
block_size at an amortised cost of about one extra position per token.

Deterministic for a seed: the draws come from a generator of their own, never the global RNG.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from workers.trainer.model import GPT, ModelConfig
from workers.trainer.tokenizer import Tokenizer

MAX_NEW_TOKENS = 100_000  # a request is bounded; a reply or a terminal is not the place for more
MIN_TEMPERATURE = 0.01  # below it, logits / temperature overflow to inf: use 0


@dataclass(frozen=True)
class SampleSettings:
    max_new_tokens: int = 256
    temperature: float = 0.8  # 0: always the most likely token
    top_k: int | None = 200  # only the k most likely tokens are drawn from; None: all
    seed: int = 1337

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not 0 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise ValueError(f"max_new_tokens must be 0..{MAX_NEW_TOKENS}, got {self.max_new_tokens!r}")
        if not (self.temperature == 0.0 or MIN_TEMPERATURE <= self.temperature <= 10.0):
            raise ValueError(f"temperature must be 0 (the most likely token) or {MIN_TEMPERATURE}..10, got "
                             f"{self.temperature!r}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k!r}")


def served_model(model_config: ModelConfig, payload: Mapping[str, Any], device: torch.device) -> GPT:
    """The checkpoint's served weights (the running average where the profile keeps one), ready to sample."""
    model = GPT(model_config)
    model.load_state_dict(payload["model"])
    return model.to(device).eval()


def generate(model: GPT, prompt: Tensor, settings: SampleSettings) -> Iterator[int]:
    """Token ids after `prompt` (1-D), one at a time, so a caller can show them as they come."""
    if settings.max_new_tokens == 0:
        return
    device = model.lm_head.weight.device
    block = model.config.block_size
    gen = torch.Generator(device=device).manual_seed(settings.seed)
    context = prompt.to(device=device, dtype=torch.long).view(1, -1)
    if context.numel() == 0:
        raise ValueError("the prompt must hold at least one token")
    cache = model.new_cache()
    logits = model.decode(context[:, -block:], cache)
    for made in range(settings.max_new_tokens):
        token = _draw(logits, settings, gen)
        yield token
        if made + 1 == settings.max_new_tokens:
            return
        context = torch.cat([context[:, -block:], torch.tensor([[token]], device=device)], dim=1)
        if cache[0].length == block:  # full: start again from the latest half of the context
            cache = model.new_cache()
            logits = model.decode(context[:, -(block // 2 or 1):], cache)
        else:
            logits = model.decode(context[:, -1:], cache)


def _draw(logits: Tensor, settings: SampleSettings, gen: torch.Generator) -> int:
    logits = logits[0].float()
    if settings.temperature == 0.0:
        return int(torch.argmax(logits))
    logits = logits / settings.temperature
    if settings.top_k is not None and settings.top_k < logits.numel():
        kth = torch.topk(logits, settings.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))


def sample_text(model_config: ModelConfig, payload: Mapping[str, Any], tokenizer: Tokenizer, prompt: bytes,
                settings: SampleSettings, device: torch.device) -> tuple[str, int]:
    """(text after `prompt`, tokens generated); bytes that are not UTF-8 show as U+FFFD. The prompt keeps its
    last block_size tokens: the model sees no more."""
    model = served_model(model_config, payload, device)
    ids = tokenizer.encode(prompt)[-model_config.block_size:]
    text = codecs.getincrementaldecoder("utf-8")("replace")
    out, made = [], 0
    for token in generate(model, ids, settings):
        out.append(text.decode(tokenizer.decode([token])))
        made += 1
    out.append(text.decode(b"", final=True))
    return "".join(out), made

