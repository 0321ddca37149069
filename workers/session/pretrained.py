"""`init_from`: start a lineage from a pretrained GPT-2-format model instead of random weights.

A repository's config is untrusted, so it names a model and the operator decides where names may lead
(`PretrainedSources`): under the directories or URL prefixes in RETRAIN_PRETRAINED_ROOTS, or a Hugging Face
Hub id when RETRAIN_PRETRAINED_HUB allows the network; nothing else, so a config cannot make a worker read
its own files or reach a host. Local mode (`retrain train`) reads any path or URL: whoever runs it is the
operator. Only `config.json`, `tokenizer.json` and `model.safetensors` are read, each size-capped;
pickled weights (`pytorch_model.bin`) are never loaded, as they can run code.

The model's config decides the network (the profile's shape fields are ignored for such a profile) and its
tokenizer is the lineage's. Sessions after the first continue the lineage from its checkpoints, which
carry both, so the source is read only when a lineage starts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fsspec
from torch import Tensor

from app.config.limits import Limits
from app.errors import SessionError
from workers.trainer.checkpoint import weight_shapes
from workers.trainer.hf_format import model_config_from_hf, state_from_hf
from workers.trainer.model import ModelConfig
from workers.trainer.tokenizer import BPETokenizer

MAX_CONFIG_BYTES = 1 << 20
MAX_TOKENIZER_BYTES = 64 << 20
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")


@dataclass(frozen=True)
class PretrainedSources:
    roots: tuple[str, ...] = ()  # directory or URL prefixes a repository's init_from may name
    hub: bool = False  # Hugging Face Hub ids, downloaded with huggingface_hub (network)
    anywhere: bool = False  # local mode
    max_bytes: int = 2 << 30  # model.safetensors
    limits: Limits | None = None  # the operator's: the pretrained network must keep to them as a profile does

    def resolve(self, name: str) -> str:
        """Where `name` is read from, or a SessionError that says which setting would allow it."""
        if self.anywhere:
            return name
        if ".." not in name.split("/") and "\\" not in name:
            for root in self.roots:
                base = root.rstrip("/")
                if name == base or name.startswith(base + "/"):
                    return name
        if self.hub and _HUB_ID.fullmatch(name) and "://" not in name:
            return f"hub:{name}"
        allowed = ", ".join(self.roots) or "none"
        raise SessionError(
            f"init_from `{name}` is not a model this App may read: it must lie under one of the operator's "
            f"RETRAIN_PRETRAINED_ROOTS ({allowed})" + ("" if self.hub else ", or be a Hub id where "
                                                         "RETRAIN_PRETRAINED_HUB allows the network")
        )


NOWHERE = PretrainedSources()  # the App's default: a repository's init_from reads nothing until allowed


@dataclass(frozen=True)
class Pretrained:
    source: str
    model_config: ModelConfig
    tokenizer: BPETokenizer
    weights: dict[str, Tensor]


def read_pretrained(where: str, *, max_bytes: int, check: Callable[[ModelConfig], None] | None = None) -> Pretrained:
    """The model at `where` (a directory, an fsspec URL, or `hub:ID`). `check` sees the network its
    config.json describes before any weight is read (the operator's limits), and the weights must be that
    network's. SessionError for anything that is not a GPT-2 model our network computes the same way."""
    folder = _hub_folder(where.removeprefix("hub:")) if where.startswith("hub:") else where.rstrip("/")
    try:
        config = json.loads(_read(f"{folder}/config.json", MAX_CONFIG_BYTES))
        if not isinstance(config, dict):
            raise ValueError("config.json is not an object")
        model_config = model_config_from_hf(config)
        if check is not None:
            check(model_config)
        document = _read(f"{folder}/tokenizer.json", MAX_TOKENIZER_BYTES).decode("utf-8")
        from safetensors.torch import load as load_safetensors

        weights = state_from_hf(load_safetensors(_read(f"{folder}/model.safetensors", max_bytes)))
        found = {k: tuple(v.shape) for k, v in weights.items()}
        expected = weight_shapes(model_config)
        if found != expected:
            wrong = sorted(set(found) ^ set(expected)) or sorted(k for k in expected if found[k] != expected[k])
            raise ValueError(f"the weights are not the network config.json describes ({', '.join(wrong[:3])})")
        tokenizer = BPETokenizer(document, model_config.vocab_size)
    except FileNotFoundError as exc:
        raise SessionError(f"init_from `{where}`: {exc.args[0] if exc.args else exc} not found (a model needs "
                           "config.json, tokenizer.json and model.safetensors)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SessionError(f"init_from `{where}` is not a usable GPT-2 model: {exc}") from None
    return Pretrained(where, model_config, tokenizer, weights)


def _read(url: str, limit: int) -> bytes:
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        raise FileNotFoundError(url.rsplit("/", 1)[-1])
    size = fs.size(path)
    if size is not None and size > limit:
        raise ValueError(f"{url.rsplit('/', 1)[-1]} is {size:,} bytes, over the {limit:,} allowed")
    with fs.open(path, "rb") as f:
        data: bytes = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{url.rsplit('/', 1)[-1]} is over the {limit:,} bytes allowed")
    return data


def _hub_folder(repo_id: str) -> str:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise SessionError("init_from a Hub id needs huggingface_hub (pip install 'retrain[hf]')") from None
    try:
        path: Any = snapshot_download(repo_id, allow_patterns=["config.json", "tokenizer.json", "model.safetensors"])
    except Exception as exc:  # the library's errors vary: offline, not found, gated
        raise SessionError(f"init_from `{repo_id}` could not be downloaded from the Hub: {exc}") from None
    return str(path)
