"""`.github/retrain.yml`: the per-repository config, validated with pydantic (no I/O here).

Defaults reproduce the seed workflow's three profiles, so a repository without the file still trains.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import yaml
from celery.schedules import crontab
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.config.globs import MAX_PATTERNS, check_pattern
from app.errors import ConfigError

CONFIG_PATH = ".github/retrain.yml"
MAX_CONFIG_BYTES = 64 * 1024  # a config is a page of YAML; a bigger file is not one
MAX_PROBLEMS = 10  # a reply names the first few problems, not a wall of them
MAX_PROFILES = 64
MAX_KEPT_CHECKPOINTS = 1000  # the config's retention and a dispatch's max_checkpoints input alike
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ten times faster, and no deep recursion

# Names from the repository end up in store keys, file paths and API paths: one strict shape each, so none
# can climb out of its folder (`..`), start at the root, or carry a separator, a scheme or a control code.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]*"
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
RUN_PREFIX = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._-]{0,63})?")
PROGRESS_DIR = re.compile(rf"\.?{_SEGMENT}(?:/\.?{_SEGMENT}){{0,7}}")
WORKFLOW_PATH = re.compile(r"\.github/workflows/[A-Za-z0-9][A-Za-z0-9._-]{0,99}\.ya?ml")
TAG_PREFIX = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._-]{0,63})?")
MAX_TAG_CHARS = 200
_BAD_REF = re.compile(r"\.\.|@\{|//|[\x00-\x20\x7f~^:?*\[\\]|^[-/.]|[/.]$|\.lock$|/\.")


def _progress_dir(value: str) -> str:
    """Also not where git or GitHub keep what a commit may not touch: `.git` itself, or workflow files
    (committing there needs the `workflows` permission, which the App does not ask for)."""
    parts = value.lower().split("/")
    if ".git" in parts or value.lower().startswith(".github/workflows"):
        raise ValueError(f"{value!r} is not a valid progress_dir: not inside .git or .github/workflows")
    return value


def _shaped(kind: str, pattern: re.Pattern[str], hint: str):
    def check(value: str) -> str:
        if not pattern.fullmatch(value) or ".." in value or len(value) > 200:
            raise ValueError(f"{value!r} is not a valid {kind}: {hint}")
        return value
    return check


ProfileName = Annotated[str, AfterValidator(_shaped(
    "profile name", PROFILE_NAME, "1-40 letters, digits, '-' or '_', starting with a letter or digit"))]
RunPrefix = Annotated[str, AfterValidator(_shaped(
    "run_prefix", RUN_PREFIX, "up to 64 letters, digits, '.', '-' or '_', starting with a letter or digit (it is "
    "the start of a folder name, never a path)"))]
ProgressDir = Annotated[str, AfterValidator(_shaped(
    "progress_dir", PROGRESS_DIR, "a relative folder of up to 8 parts of letters, digits, '.', '-' or '_' (no "
    "'..', no leading '/')")), AfterValidator(_progress_dir)]
WorkflowPath = Annotated[str, AfterValidator(_shaped(
    "workflow file", WORKFLOW_PATH, "a file in .github/workflows/ ending in .yml or .yaml"))]


def _branch_name(value: str) -> str:
    if not value or len(value) > 200 or _BAD_REF.search(value):
        raise ValueError(f"{value!r} is not a valid branch name (git check-ref-format rules)")
    return value


BranchName = Annotated[str, AfterValidator(_branch_name)]
TagPrefix = Annotated[str, AfterValidator(_shaped(
    "tag_prefix", TAG_PREFIX, "up to 64 letters, digits, '.', '-' or '_', starting with a letter or digit (it is "
    "the start of a git tag name)"))]
Permission = Literal["read", "triage", "write", "maintain", "admin"]
PERMISSION_RANK: dict[str, int] = {"none": 0, "read": 1, "triage": 2, "write": 3, "maintain": 4, "admin": 5}


class Profile(BaseModel):
    """Model shape and session length for one kind of session."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    n_layer: int = Field(4, ge=1, le=96, description="Transformer blocks.")
    n_head: int = Field(4, ge=1, le=128, description="Attention heads; must divide n_embd.")
    n_embd: int = Field(256, ge=8, le=16384, description="Embedding width.")
    block_size: int = Field(256, ge=8, le=32768, description="Context length in tokens.")
    tokenizer: Literal["auto", "bytes", "bpe"] = Field(
        "auto", description="`bpe`: a byte-level BPE of `vocab_size` tokens, learnt from the training split when a "
        "lineage starts and kept with its checkpoints. `bytes`: one token per byte. `auto`: whichever lineage of the "
        "two has the best checkpoint goes on (bits per byte compare across tokenizers), and a new lineage uses `bpe`, "
        "which measured better (README), when the training text is at least 8 KiB of UTF-8, else `bytes`; as the "
        "text grows past that (or to twice what its BPE learnt from) and a BPE learnt from today's text reads it "
        "at least 5 % more compactly, a session tries moving the lineage to that BPE, carrying its training state "
        "over, and keeps the move only when it measures better. Part of what a "
        "checkpoint needs to be continued.",
    )
    init_from: str | None = Field(
        None, min_length=1, max_length=500, pattern=r"^[^\x00-\x1f\x7f]+$",
        description="A pretrained GPT-2-format model (a folder or URL with config.json, tokenizer.json and "
        "model.safetensors, or a Hub id) whose weights and tokenizer start a new lineage; its config sets the "
        "network, so this profile's shape and tokenizer fields are ignored. The App reads only what its operator "
        "allows (RETRAIN_PRETRAINED_ROOTS, RETRAIN_PRETRAINED_HUB); local mode reads any path.",
    )
    vocab_size: int = Field(
        4096, ge=257, le=65536, description="Tokens of the BPE (`bpe`, and `auto` for a new lineage; bytes are 256).",
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout probability.")
    max_iters: int = Field(500, ge=1, description="Iterations per session (a command's max_iters overrides).")
    batch_size: int = Field(8, ge=1, description="Sequences per iteration.")
    learning_rate: float = Field(
        6e-4, gt=0, le=1.0,
        description="Peak learning rate: reached after warmup, then held for as long as the lineage lives.",
    )
    min_lr: float = Field(6e-5, ge=0, description="Where a cooldown ends (see cooldown_fraction).")
    warmup_iters: int = Field(
        100, ge=0, description="Linear warmup, in global iterations: only a new lineage warms up.",
    )
    cooldown_fraction: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="Share of each session's last iterations spent cooling the learning rate down to min_lr; the "
        "next session goes on at the peak rate. Off by default: the running average (average_horizon) does "
        "what a cooldown does without undoing it at every session's start.",
    )
    average_horizon: int = Field(
        20, ge=0, le=100_000,
        description="The weights a session commits are a running average of the live ones over about this many "
        "recent iterations (over about a ninth of the lineage's age while that is shorter), so there is no "
        "cooldown to repeat in every session and the lineage trains on as if in one run (0: the live weights).",
    )
    lr_decay_iters: int = Field(
        5000, ge=1, description="Ignored: the schedule has no global decay horizon any more (kept so old files parse).",
    )
    weight_decay: float = Field(0.1, ge=0, le=10.0, description="AdamW weight decay on matrices and embeddings.")
    eval_iters: int = Field(
        20, ge=1, description="Ignored: evaluation reads fixed windows of the split (kept so old files parse).",
    )
    reevaluate: int = Field(
        3, ge=0, le=16,
        description="When the validation set changed since the best checkpoints were measured: how many of them "
        "are measured again on today's set before choosing where to continue.",
    )
    time_limit_s: float = Field(
        3 * 3600, gt=0,
        description="Soft time limit: the session stops training, then evaluates, stores and commits what it has.",
    )
    checkpoint_every_s: float = Field(
        600, gt=0, description="In-session checkpoints: a session whose worker dies resumes from the last one.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        """What the worker would refuse later, said now (`retrain config check` runs this)."""
        if self.n_embd % self.n_head:
            raise ValueError(f"n_head ({self.n_head}) must divide n_embd ({self.n_embd})")
        if self.min_lr > self.learning_rate:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed learning_rate ({self.learning_rate})")
        return self


DEFAULT_PROFILES: dict[str, Profile] = {
    "ci": Profile(n_layer=4, n_head=4, n_embd=256, block_size=256, max_iters=500, time_limit_s=3600),
    "scheduled": Profile(n_layer=6, n_head=6, n_embd=384, block_size=256, max_iters=2000, time_limit_s=4 * 3600),
    "full": Profile(n_layer=8, n_head=8, n_embd=512, block_size=256, max_iters=5000, time_limit_s=10 * 3600),
}


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    include: tuple[Annotated[str, AfterValidator(check_pattern)], ...] = Field(
        ("**/*.md", "**/*.txt"), min_length=1, max_length=MAX_PATTERNS,
        description="Globs of training text files: gitignore syntax, anchored at the repository root (`*.md` is "
        "the top folder's, `**/*.md` every folder's; `!` takes files back out), matched in linear time.",
    )
    val_fraction: float = Field(
        0.1, gt=0.0, lt=0.5,
        description="Share of the bytes held out for validation, never trained on; which text is held out "
        "depends on the text alone, so it stays held out as the repository changes.",
    )


class RetentionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_checkpoints: int = Field(
        10, ge=1, le=MAX_KEPT_CHECKPOINTS,
        description="Checkpoints kept in the registry and the store: entries without weights go first, then other "
        "model shapes', then the worst; the session's own and the lineage's best always stay. Weights another "
        "branch's registry still names stay in the store."
    )


def _cron(value: str) -> str:
    try:
        crontab.from_string(value)
    except ValueError as exc:
        raise ValueError(f"`{value}` is not a cron expression ({exc})") from None
    return value


class ScheduleEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: Annotated[str, AfterValidator(_cron)] = Field(
        pattern=r"^\S+(\s+\S+){4}$", max_length=200, description="Five cron fields, UTC.",
    )
    profile: ProfileName = Field("scheduled", description="The profile the entry trains.")


class PublishConfig(BaseModel):
    """Publishing a new best checkpoint's export; off unless a repository asks for it, since a release is
    public on a public repository and notifies everyone watching its releases."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    releases: bool = Field(
        False, description="Publish each new best checkpoint's export (config, weights, tokenizer, model card) as "
        "the assets of a GitHub Release tagged at the progress commit, with the model card as its notes "
        "(docs/publishing.md).",
    )
    tag_prefix: TagPrefix = Field(
        "retrain-", description="A release's tag is this prefix, the run name and the checkpoint id, e.g. "
        "`retrain-nanecho-cached-ci-ckpt_20261201_120000_500_1a2b3c4d`.",
    )

    def release_tag(self, run: str, checkpoint_id: str) -> str:
        """The checkpoint's tag: one per checkpoint, so a redelivered session finds its own release again.
        Checked against git's rules here too, as run and checkpoint id come from elsewhere."""
        tag = f"{self.tag_prefix}{run}-{checkpoint_id}"
        if len(tag) > MAX_TAG_CHARS or _BAD_REF.search(tag):
            raise ConfigError(f"{tag!r} is not a valid tag name (git check-ref-format rules, at most "
                              f"{MAX_TAG_CHARS} characters)")
        return tag


class RepoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    progress_dir: ProgressDir = Field(
        ".training-progress", description="Folder of the progress files in the repository.",
    )
    branch: BranchName | None = Field(
        None, description="Branch the progress is committed to; default: the default branch.",
    )
    run_prefix: RunPrefix = Field("nanecho-cached-", description="Run folder name is this prefix plus the profile.")
    data: DataConfig = Field(DataConfig(), description="Which files are training text.")
    profiles: dict[ProfileName, Profile] = Field(
        default_factory=lambda: dict(DEFAULT_PROFILES), max_length=MAX_PROFILES,
        description="Model shape and session length per profile; merged over the defaults ci, scheduled, full.",
    )
    retention: RetentionConfig = Field(RetentionConfig(), description="How many checkpoints are kept.")
    permission: Permission = Field("write", description="Minimum repository permission to run `/retrain`.")
    on_incompatible: Literal["fresh", "stop"] = Field(
        "fresh", description="When every stored checkpoint has another model shape or tokenizer (edited text never "
        "counts): "
        "start a fresh model (earlier checkpoints stay) or stop and say so.",
    )
    workflows: tuple[WorkflowPath, ...] = Field(
        (), description="Workflow files whose workflow_dispatch and scheduled workflow_run events start sessions.",
    )
    schedule: tuple[ScheduleEntry, ...] = Field((), description="Cron entries (UTC) that start sessions.")
    publish: PublishConfig = Field(
        PublishConfig(), description="Publishing new best checkpoints as GitHub Releases (off by default).",
    )

    @model_validator(mode="after")
    def _schedules_name_profiles(self) -> RepoConfig:
        for index, entry in enumerate(self.schedule):
            if entry.profile not in self.profiles:
                raise ValueError(f"schedule.{index}.profile: unknown profile `{entry.profile}`; valid profiles: "
                                 f"{', '.join(sorted(self.profiles))}")
        return self

    def run_name(self, profile: str) -> str:
        """Seed-compatible run folder name, e.g. `nanecho-cached-ci`."""
        return f"{self.run_prefix}{profile}"

    def allows(self, permission: str) -> bool:
        return PERMISSION_RANK.get(permission, 0) >= PERMISSION_RANK[self.permission]


def parse_repo_config(text: str | bytes | None) -> RepoConfig:
    """The config from the file's text; defaults when the file is absent. Profiles given merge over defaults."""
    if text is None:
        return RepoConfig()
    size = len(text.encode() if isinstance(text, str) else text)
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{CONFIG_PATH} is {size:,} bytes; a config is at most {MAX_CONFIG_BYTES:,}")
    try:
        raw = yaml.load(text, Loader=_SAFE_LOADER) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{CONFIG_PATH} is not valid YAML: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"{CONFIG_PATH} nests too deeply to be a config") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{CONFIG_PATH} must be a mapping at the top level")
    profiles = raw.get("profiles")
    try:
        if isinstance(profiles, dict):
            merged = {name: p.model_dump() for name, p in DEFAULT_PROFILES.items()}
            for name, overrides in profiles.items():
                if not isinstance(overrides, dict):
                    raise ConfigError(f"{CONFIG_PATH}: profiles.{name} must be a mapping")
                merged[name] = {**merged.get(name, {}), **overrides}
            raw = {**raw, "profiles": merged}
        return RepoConfig.model_validate(raw)
    except RecursionError:
        raise ConfigError(f"{CONFIG_PATH} nests too deeply to be a config") from None
    except ValidationError as exc:
        errors = exc.errors()
        problems = "; ".join(
            ": ".join(part for part in (".".join(str(p) for p in err["loc"]), err["msg"].removeprefix("Value error, "))
                      if part)
            for err in errors[:MAX_PROBLEMS]
        )
        more = f"; and {len(errors) - MAX_PROBLEMS} more" if len(errors) > MAX_PROBLEMS else ""
        raise ConfigError(f"{CONFIG_PATH} is invalid: {problems}{more}") from exc
