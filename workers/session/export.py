"""A checkpoint as a Hugging Face model folder: what `transformers` loads, the Hub takes, and a release holds.

    config.json              GPT2LMHeadModel's config (workers/trainer/hf_format.py)
    model.safetensors        the served weights, float32
    tokenizer.json           the lineage's tokenizer in the `tokenizers` format (bytes: a BPE without merges)
    tokenizer_config.json    so that AutoTokenizer picks the fast tokenizer from tokenizer.json
    generation_config.json
    README.md                the model card: lineage, data revision, bits per byte, iterations, licence

Written to a temporary folder beside `out` and moved into place, so a failed export leaves no half folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from safetensors.torch import save_file

from workers.session.best import BestModel
from workers.session.registry import MIGRATION_METHOD, Fingerprint, migration_origin
from workers.trainer.data import bits_per_byte
from workers.trainer.hf_format import hf_config, to_hf_tensors

EXPORT_FILES = ("README.md", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                "tokenizer_config.json")


def write_export(best: BestModel, out: Path, *, source: str, commit_url: str | None = None) -> Path:
    """Write `best` as a model folder at `out` (which must not exist, or be an earlier export: replaced).

    `source` names the repository (`owner/name`, or a local path) for the model card."""
    out = out.resolve()
    if out.exists() and not _is_export(out):
        raise ValueError(f"{out} exists and holds more than an earlier export's files; export to a new or empty "
                         "folder (then copy the files where they go, e.g. into a clone of a Hub repository)")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    try:
        tensors = to_hf_tensors(best.model_config, best.payload["model"])
        save_file(tensors, str(work / "model.safetensors"), metadata={"format": "pt"})
        _json(work / "config.json", hf_config(best.model_config))
        # max_length, not max_new_tokens: GPT-2 cannot see past its context, prompt included
        _json(work / "generation_config.json", {"do_sample": True, "temperature": 0.8, "top_k": 200,
                                                "max_length": best.model_config.block_size,
                                                "bos_token_id": None, "eos_token_id": None})
        (work / "tokenizer.json").write_text(best.tokenizer.hf_json(), encoding="utf-8")
        _json(work / "tokenizer_config.json", {
            "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": best.model_config.block_size,
            "clean_up_tokenization_spaces": False, "add_prefix_space": False,
        })
        (work / "README.md").write_text(model_card(best, source=source, commit_url=commit_url), encoding="utf-8")
        work.chmod(0o755)  # mkdtemp's 0700 would keep the folder from whoever it is shared with
        for path in work.iterdir():
            path.chmod(0o644)
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def moved_from(fp: Fingerprint | None) -> str:
    """Where a lineage that moved to this tokenizer came from (workers/session/migration.py), when the
    registry says it in the shape a session writes."""
    origin = migration_origin(fp)
    if origin is None:
        return ""
    return (f"; the lineage moved to it from `{origin['tokenizer']}` at `{origin['checkpoint_id']}` by "
            f"{MIGRATION_METHOD}")


def model_card(best: BestModel, *, source: str, commit_url: str | None = None) -> str:
    entry, cfg = best.entry, best.model_config
    metrics = (entry.model_extra or {}).get("metrics") or {}
    fp = entry.fingerprint
    bpb = bits_per_byte(entry.val_loss) if entry.val_loss is not None else None
    params = sum(v.numel() for k, v in best.payload["model"].items() if k != "lm_head.weight")
    session = (entry.model_extra or {}).get("session")
    trained_on = session.get("data_commit") if isinstance(session, dict) else None
    trained_on = trained_on if isinstance(trained_on, str) and re.fullmatch(r"[0-9a-f]{7,64}", trained_on) else None
    rows = [
        ("Checkpoint", f"`{entry.checkpoint_id}`"),
        ("Validation", f"{bpb:.4f} bits per byte on held-out text" if bpb is not None else "not measured"),
        ("Iterations", f"{entry.iteration:,}"),
        ("Tokens trained", f"{int(metrics['tokens_processed']):,}" if metrics.get("tokens_processed") else "?"),
        ("Network", f"GPT-2: {cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} wide, context {cfg.block_size} "
                    f"tokens, {params:,} parameters"),
        ("Tokenizer", f"`{best.tokenizer.id}` ({best.tokenizer.vocab_size} tokens)" + moved_from(fp)),
        ("Data revision", f"`{trained_on}` (the commit whose text it trained on)" if trained_on
         else "not recorded (a checkpoint from before Retrain recorded it)"),
        ("Exported from", f"`{best.head.oid}` on `{best.head.name}`" + (f" ({commit_url})" if commit_url else "")),
        ("Training data", f"`{fp.data_sha256[:16]}…` (sha256 of the tokenized split)" if fp else "?"),
        ("Profile / run", f"`{best.profile}` / `{best.run}`"),
    ]
    lineage = [f"| `{e.checkpoint_id}` | {e.iteration:,} | "
               + (f"{bits_per_byte(e.val_loss):.4f}" if e.val_loss is not None else "–") + " |"
               for e in best.ancestry(20)]
    return "\n".join([
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "license: other  # placeholder: the licence of the training text decides; set it before sharing",
        "tags: [retrain, gpt2, persistent-learning]",
        "---",
        "",
        f"# {source}: {best.run}",
        "",
        f"A small GPT-2-architecture language model trained by Retrain on the text of "
        f"`{source}`, session after session, each continuing the best checkpoint before it.",
        "",
        "| | |", "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
        "## Lineage",
        "",
        "Newest first, as far as the registry (`metadata.json`) still holds them.",
        "",
        "| checkpoint | iteration | val bits/byte |", "| --- | --- | --- |",
        *lineage,
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "model = AutoModelForCausalLM.from_pretrained(PATH)",
        "tokenizer = AutoTokenizer.from_pretrained(PATH)",
        "ids = tokenizer(\"Hello\", return_tensors=\"pt\").input_ids",
        "print(tokenizer.decode(model.generate(ids, max_new_tokens=64, do_sample=True)[0]))",
        "```",
        "",
        "## Licence",
        "",
        "Not set: the model is derived from the repository's text, whose licence applies. Replace `license: other` "
        "above with it before sharing.",
        "",
    ])


def _json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _is_export(path: Path) -> bool:
    """Empty, or only an export's own files: anything else (a `.git`, a file of the user's) is not ours to
    delete."""
    return path.is_dir() and not path.is_symlink() and all(
        p.name in EXPORT_FILES and p.is_file() and not p.is_symlink() for p in path.iterdir())
