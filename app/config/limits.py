"""What one repository may make the App spend: the operator's limits, checked when a session is enqueued,
again when it starts (the limits may have been lowered since, and a queued message outlives its config),
and by `retrain config check`. Pure: `Settings.limits` builds `Limits`; nothing here does I/O.

Every refusal names the field, the limit, and the environment variable that sets it, so the person who
reads it knows whether to change their config or to ask whoever runs the App.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from celery.schedules import crontab

from app.config.repo_config import Profile, RepoConfig

BYTE_VOCAB = 256  # the byte tokenizer's (workers/trainer/tokenizer.py)
MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True)
class Limits:
    """Defaults fit one modern GPU; see app/config/settings.py for each one's variable."""

    max_iters: int = 100_000
    max_params: int = 300_000_000
    max_batch_size: int = 512
    max_block_size: int = 4096
    max_tokens_per_iter: int = 524_288
    max_schedule_entries: int = 8
    min_schedule_interval_s: int = 3600
    gpu_seconds_per_day: float = 24 * 3600.0
    max_worker_losses: int = 3
    max_snapshot_bytes: int = 256 * 1024 * 1024


def _over(what: str, value: float, limit: float, variable: str) -> str:
    return (f"{what} is {value:,.0f}, over this App's limit of {limit:,.0f} ({variable}, set by whoever runs the "
            "App)")


def estimate_params(profile: Profile) -> int:
    """The parameter count of the network a profile builds (workers/trainer/model.GPT, tied embedding,
    biases): known before anything is allocated, and tested against the real model."""
    c, layers = profile.n_embd, profile.n_layer
    vocab = BYTE_VOCAB if profile.tokenizer == "bytes" else profile.vocab_size
    return vocab * c + profile.block_size * c + layers * (12 * c * c + 13 * c) + 2 * c


def profile_problems(name: str, profile: Profile, limits: Limits, max_iters: int | None = None) -> list[str]:
    """Why a session of this profile (with this many iterations, if a trigger set them) would be refused."""
    where = f"profiles.{name}"
    problems = []
    iters = max_iters if max_iters is not None else profile.max_iters
    if iters > limits.max_iters:
        what = "max_iters" if max_iters is not None else f"{where}.max_iters"
        problems.append(_over(what, iters, limits.max_iters, "RETRAIN_MAX_ITERS"))
    params = estimate_params(profile)
    if params > limits.max_params:
        problems.append(_over(f"{where}: the model's parameter count", params, limits.max_params,
                              "RETRAIN_MAX_PARAMS"))
    if profile.batch_size > limits.max_batch_size:
        problems.append(_over(f"{where}.batch_size", profile.batch_size, limits.max_batch_size,
                              "RETRAIN_MAX_BATCH_SIZE"))
    if profile.block_size > limits.max_block_size:
        problems.append(_over(f"{where}.block_size", profile.block_size, limits.max_block_size,
                              "RETRAIN_MAX_BLOCK_SIZE"))
    tokens = profile.batch_size * profile.block_size
    if tokens > limits.max_tokens_per_iter:
        problems.append(_over(f"{where}: batch_size × block_size", tokens, limits.max_tokens_per_iter,
                              "RETRAIN_MAX_TOKENS_PER_ITER"))
    return problems


def shortest_interval_s(cron: crontab) -> int:
    """The least time between two firings on the same or on consecutive days: exact for schedules that fire
    every day, a lower bound for the others (which fire less often), computed without walking a calendar."""
    times = sorted(h * 60 + m for h in cron.hour for m in cron.minute)
    gaps = [b - a for a, b in pairwise(times)]
    gaps.append(times[0] + MINUTES_PER_DAY - times[-1])  # the last firing of a day to the first of the next
    return min(gaps) * 60


def schedule_problems(config: RepoConfig, limits: Limits) -> list[str]:
    problems = []
    if len(config.schedule) > limits.max_schedule_entries:
        problems.append(_over("the number of schedule entries", len(config.schedule), limits.max_schedule_entries,
                              "RETRAIN_MAX_SCHEDULE_ENTRIES"))
    for index, entry in enumerate(config.schedule):
        interval = shortest_interval_s(crontab.from_string(entry.cron))
        if interval < limits.min_schedule_interval_s:
            problems.append(
                f"schedule.{index}.cron: `{entry.cron}` fires {interval} s apart, more often than this App's limit "
                f"of once per {limits.min_schedule_interval_s} s (RETRAIN_MIN_SCHEDULE_INTERVAL_S, set by whoever "
                "runs the App)"
            )
    return problems


def config_problems(config: RepoConfig, limits: Limits) -> list[str]:
    """Everything in a config the limits refuse: every profile (each could be asked for) and the schedule."""
    problems = [p for name, profile in config.profiles.items() for p in profile_problems(name, profile, limits)]
    return problems + schedule_problems(config, limits)
