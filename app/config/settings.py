"""Process settings, read once from the environment (and an optional `.env`) in `main()` and passed down.

Secrets are `SecretStr` so that a logged or printed `Settings` never shows them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.config.limits import Limits

_LIMITS = Limits()
GPU_BATCH_SIZE = 64  # sequences per iteration for a profile that names none, on a GPU (8 on the CPU)


def default_store_url() -> str:
    """Checkpoints live outside any git repository by default: weights never go into git."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return f"file://{base}/retrain/checkpoints"


class Settings(BaseSettings):
    """Everything a process needs to know about its surroundings; nothing here is per repository."""

    model_config = SettingsConfigDict(env_prefix="RETRAIN_", env_file=".env", extra="ignore")

    app_id: str | None = Field(default=None, description="The GitHub App's id.")
    private_key: SecretStr | None = Field(default=None, description="The App's PEM private key (value).")
    private_key_path: Path | None = Field(default=None, description="Or a path to the PEM file.")
    webhook_secret: SecretStr | None = Field(default=None, description="Secret that signs webhook deliveries.")
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("RETRAIN_REDIS_URL", "REDIS_URL"),
        description="Broker, delivery dedupe and locks.",
    )
    github_api_url: str = Field(
        default="https://api.github.com",
        description="REST base URL; GitHub Enterprise: https://HOST/api/v3. Tests point it at the emulator.",
    )
    github_graphql_url: str | None = Field(
        default=None, description="GraphQL endpoint; derived from github_api_url when unset."
    )
    github_uploads_url: str | None = Field(
        default=None, description="Release-asset upload host; derived from github_api_url when unset "
        "(https://uploads.github.com; GitHub Enterprise: https://HOST/api/uploads). The token is sent only there.",
    )
    store_url: str = Field(
        default_factory=default_store_url,
        description="fsspec URL of the checkpoint store (s3://, gs://, file://...); "
        "default file://$XDG_DATA_HOME/retrain/checkpoints.",
    )
    delivery_ttl_s: int = Field(default=7 * 24 * 3600, description="How long a delivery id is remembered.")
    max_session_s: int = Field(
        default=12 * 3600, ge=60,
        description="The longest a session may train (profiles' `time_limit_s` are capped to it); "
        "the broker's visibility timeout is derived from it.",
    )
    hard_limit_grace_s: int = Field(
        default=900, ge=10,
        description="After a session's soft time limit it evaluates, stores and commits; past this much "
        "more the worker process is killed (Celery's hard time limit).",
    )
    lock_ttl_s: float = Field(
        default=60.0, gt=0,
        description="Lease on a (repository, run): a dead worker's run is free again after this long.",
    )
    event_retries: int = Field(
        default=6, ge=0, le=20,
        description="How often the events worker tries again to carry out a command after GitHub or Redis "
        "failed past the per-call retries (backoff doubling from event_retry_s, jittered).",
    )
    event_retry_s: float = Field(
        default=15.0, gt=0, le=600, description="The first wait before an events task tries again.",
    )
    busy_retry_s: float = Field(
        default=30.0, gt=0, description="How often a follow-up session checks whether its run is free."
    )
    orphan_after_s: float = Field(
        default=300.0, gt=0,
        description="A running session whose lease is gone and which was quiet this long lost its whole "
        "worker; it is sent again (workers/coordination/orphans.py).",
    )
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="Log lines as JSON objects or text; auto: text at a terminal, else JSON."
    )
    orphan_check_s: float = Field(default=60.0, gt=0, description="How often beat looks for such sessions.")
    # -- what one repository may make the App spend (app/config/limits.py); refusals name the variable ------------
    max_iters: int = Field(
        default=_LIMITS.max_iters, ge=1,
        description="Most iterations one session may train (a profile's or a command's).",
    )
    max_params: int = Field(
        default=_LIMITS.max_params, ge=1, description="Largest model a profile may ask for, in parameters.",
    )
    max_batch_size: int = Field(default=_LIMITS.max_batch_size, ge=1, description="Largest `batch_size` of a profile.")
    max_block_size: int = Field(default=_LIMITS.max_block_size, ge=8, description="Largest `block_size` of a profile.")
    max_tokens_per_iter: int = Field(
        default=_LIMITS.max_tokens_per_iter, ge=8,
        description="Largest `batch_size` × `block_size`: bounds the activations' memory on the GPU.",
    )
    max_schedule_entries: int = Field(
        default=_LIMITS.max_schedule_entries, ge=0, description="Most cron entries one repository may have.",
    )
    min_schedule_interval_s: int = Field(
        default=_LIMITS.min_schedule_interval_s, ge=60,
        description="Least time between two firings of one cron entry.",
    )
    gpu_seconds_per_day: float = Field(
        default=_LIMITS.gpu_seconds_per_day, gt=0,
        description="Session time one installation may use per UTC day, all its repositories together; a session "
        "starts only with some left and stops training when its share runs out.",
    )
    max_snapshot_bytes: int = Field(
        default=_LIMITS.max_snapshot_bytes, ge=1,
        description="Most training text one session reads: the files `data.include` selects, together; summed "
        "from the tree listing before anything is downloaded.",
    )
    pretrained_roots: tuple[str, ...] = Field(
        default=(), description="Folders or URL prefixes (JSON list) under which a repository's `init_from` may name "
        "a pretrained model; none by default, so a config cannot make a worker read its files or reach a host.",
    )
    pretrained_hub: bool = Field(
        default=False, description="Let `init_from` name a Hugging Face Hub id, downloaded over the network.",
    )
    max_worker_losses: int = Field(
        default=_LIMITS.max_worker_losses, ge=1,
        description="A session whose worker process is lost this many times (killed for memory, a hard time "
        "limit) fails with a report instead of being sent again.",
    )
    samples_per_hour: int = Field(
        default=10, ge=0, le=1000,
        description="`/retrain sample` replies one repository may ask for per clock hour (0: sampling is off).",
    )
    sample_tokens: int = Field(
        default=200, ge=1, le=2000,
        description="Tokens a `/retrain sample` reply generates after the prompt.",
    )
    nproc_per_node: int = Field(
        default=1, ge=1, le=64,
        description="Training processes per session on this worker, one per GPU (torchrun, DDP): the profile's "
        "batch is shared among them, so a session's result does not depend on this.",
    )
    micro_batch_size: int | None = Field(
        default=None, ge=1,
        description="Sequences per forward pass in each training process; the rest of the batch is accumulated "
        "(for GPUs too small for a profile's batch). Unset: a process's whole share at once.",
    )
    compile: Literal["auto", "on", "off"] = Field(
        default="auto", description="torch.compile the training step: `auto` on CUDA only (it pays there and costs "
        "a minute or so of compiling per session), `on`, or `off`.",
    )
    group_dir: Path | None = Field(
        default=None,
        description="Where a session on several processes hands its ranks their inputs and gets their snapshots "
        "and result back: files of a checkpoint's size (about 16 bytes a parameter), a few at a time. Default: the "
        "system's temporary folder ($TMPDIR).",
    )
    gpu_batch_size: int = Field(
        default=GPU_BATCH_SIZE, ge=1,
        description="Sequences per iteration on a GPU for a profile that sets no `batch_size` (8 on the CPU); never "
        "past RETRAIN_MAX_BATCH_SIZE or RETRAIN_MAX_TOKENS_PER_ITER.",
    )
    sample_time_limit_s: int = Field(
        default=300, ge=10, le=3600,
        description="Longest a sample may take on the train worker, loading the checkpoint included.",
    )

    @property
    def visibility_timeout_s(self) -> int:
        """Longer than any session may run, so Redis never hands a running session's message to a second
        worker; an unacknowledged message of a lost worker comes back after this long."""
        return self.max_session_s + self.hard_limit_grace_s + 600

    @property
    def limits(self) -> Limits:
        return Limits(
            max_iters=self.max_iters, max_params=self.max_params, max_batch_size=self.max_batch_size,
            max_block_size=self.max_block_size, max_tokens_per_iter=self.max_tokens_per_iter,
            max_schedule_entries=self.max_schedule_entries, min_schedule_interval_s=self.min_schedule_interval_s,
            gpu_seconds_per_day=self.gpu_seconds_per_day, max_worker_losses=self.max_worker_losses,
            max_snapshot_bytes=self.max_snapshot_bytes,
        )

    @model_validator(mode="after")
    def _key_from_one_place(self) -> Settings:
        if self.private_key is not None and self.private_key_path is not None:
            raise ValueError("set RETRAIN_PRIVATE_KEY or RETRAIN_PRIVATE_KEY_PATH, not both")
        return self

    @property
    def graphql_url(self) -> str:
        if self.github_graphql_url:
            return self.github_graphql_url
        api = self.github_api_url.rstrip("/")
        if api.endswith("/api/v3"):  # GitHub Enterprise Server serves GraphQL beside REST
            return api[: -len("/v3")] + "/graphql"
        return api + "/graphql"

    @property
    def uploads_url(self) -> str:
        """Where release assets are uploaded: another host than the REST API's, named in a release's
        `upload_url`; the client uploads only to this one, so a token never goes to a host nobody configured."""
        if self.github_uploads_url:
            return self.github_uploads_url.rstrip("/")
        api = self.github_api_url.rstrip("/")
        if api == "https://api.github.com":
            return "https://uploads.github.com"
        if api.endswith("/api/v3"):
            return api.removesuffix("/v3") + "/uploads"
        return api

    @property
    def web_url(self) -> str:
        """Where people look: github.com for api.github.com, the host for GitHub Enterprise Server."""
        api = self.github_api_url.rstrip("/")
        if api == "https://api.github.com":
            return "https://github.com"
        return api.removesuffix("/api/v3")

    def app_private_key(self) -> str:
        """The PEM text; a clear error when the App cannot authenticate."""
        if self.private_key is not None:
            return self.private_key.get_secret_value()
        if self.private_key_path is not None:
            try:
                return self.private_key_path.read_text()
            except OSError as exc:
                raise ValueError(f"cannot read RETRAIN_PRIVATE_KEY_PATH {self.private_key_path}: {exc}") from exc
        raise ValueError("the App's private key is not configured: set RETRAIN_PRIVATE_KEY_PATH")

    def require_app(self) -> tuple[str, str]:
        """(app id, private key) or a clear error naming the missing variable."""
        if not self.app_id:
            raise ValueError("the App id is not configured: set RETRAIN_APP_ID")
        return self.app_id, self.app_private_key()
