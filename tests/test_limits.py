"""The operator's limits: the pure checks (app/config/limits.py) and the Redis records that enforce them across
processes (session time per installation, starts per session, which delivery owns a session)."""

from __future__ import annotations

import threading

import pytest
import redis
from celery.schedules import crontab

from app.config.limits import Limits, config_problems, estimate_params, profile_problems, shortest_interval_s
from app.config.repo_config import DEFAULT_PROFILES, Profile, parse_repo_config
from app.errors import ConfigError
from workers.coordination.budget import BudgetSpent, SessionBudgets, utc_day
from workers.coordination.losses import WorkerLosses
from workers.coordination.starts import SessionStarts
from workers.jobs.schedules import schedule_specs
from workers.session.plan import model_config_for
from workers.trainer.model import GPT


@pytest.mark.parametrize("shape", [
    {}, {"n_layer": 1, "n_head": 1, "n_embd": 8, "block_size": 8}, {"n_layer": 3, "n_head": 6, "n_embd": 96,
                                                                     "block_size": 512},
])
def test_the_parameter_estimate_is_the_real_models_count(shape: dict) -> None:
    profile = Profile(**shape)
    assert estimate_params(profile) == GPT(model_config_for(profile)).num_params()


def test_the_default_profiles_are_within_the_default_limits() -> None:
    for name, profile in DEFAULT_PROFILES.items():
        assert profile_problems(name, profile, Limits()) == [], name


def test_each_refusal_names_the_field_the_limit_and_its_variable() -> None:
    limits = Limits(max_iters=1000, max_params=1_000_000, max_batch_size=16, max_block_size=128,
                    max_tokens_per_iter=1024)
    big = Profile(n_layer=2, n_head=2, n_embd=256, block_size=256, batch_size=32, max_iters=5000)
    problems = profile_problems("big", big, limits)
    expected = [("profiles.big.max_iters", "RETRAIN_MAX_ITERS"), ("profiles.big: the model's parameter count",
                "RETRAIN_MAX_PARAMS"), ("profiles.big.batch_size", "RETRAIN_MAX_BATCH_SIZE"),
                ("profiles.big.block_size", "RETRAIN_MAX_BLOCK_SIZE"), ("batch_size × block_size",
                                                                         "RETRAIN_MAX_TOKENS_PER_ITER")]
    assert len(problems) == len(expected)
    for problem, (field, variable) in zip(problems, expected, strict=True):
        assert field in problem and variable in problem, problem
    # a command's max_iters is what is checked when it gives one, and named as the command's
    assert profile_problems("ci", DEFAULT_PROFILES["ci"], Limits(max_iters=1000), max_iters=999_999_999) == [
        "max_iters is 999,999,999, over this App's limit of 1,000 (RETRAIN_MAX_ITERS, set by whoever runs the App)"]
    assert profile_problems("ci", DEFAULT_PROFILES["ci"], Limits(max_iters=1000), max_iters=1000) == []


@pytest.mark.parametrize(("cron", "seconds"), [
    ("* * * * *", 60), ("*/5 9-17 * * 1-5", 300), ("0 3 * * *", 86400), ("0 0,23 * * *", 3600),
    ("0 */2 * * *", 7200), ("30 1 * * 0", 86400),
])
def test_the_shortest_interval_of_a_cron(cron: str, seconds: int) -> None:
    assert shortest_interval_s(crontab.from_string(cron)) == seconds


def test_too_many_or_too_frequent_schedule_entries_are_refused_and_nothing_is_applied() -> None:
    config = parse_repo_config("schedule:\n" + "".join(f"  - cron: '{m} 3 * * *'\n" for m in range(10)))
    problems = config_problems(config, Limits())
    assert any("number of schedule entries is 10" in p and "RETRAIN_MAX_SCHEDULE_ENTRIES" in p for p in problems)
    with pytest.raises(ConfigError, match="schedule refused"):
        schedule_specs("octo/demo", config, Limits())
    frequent = parse_repo_config("schedule:\n  - cron: '*/10 * * * *'\n")
    with pytest.raises(ConfigError, match=r"schedule\.0\.cron: `\*/10 \* \* \* \*` fires 600 s apart"):
        schedule_specs("octo/demo", frequent, Limits())
    assert schedule_specs("octo/demo", frequent, Limits(min_schedule_interval_s=600))


def test_a_bad_cron_is_refused_by_the_config_model() -> None:
    with pytest.raises(ConfigError, match=r"schedule\.0\.cron: `99 \* \* \* \*` is not a cron expression"):
        parse_repo_config("schedule:\n  - cron: '99 * * * *'\n")


# -- session time per installation, in a real Redis -----------------------------------------------------------
def test_grants_never_add_up_to_more_than_the_day_allows(clean_redis: redis.Redis) -> None:
    budgets = SessionBudgets(clean_redis, per_day_s=1000)
    first = budgets.grant(42, "s1", 600)
    second = budgets.grant(42, "s2", 600)
    assert (first.seconds, second.seconds) == (600, 400)
    with pytest.raises(BudgetSpent, match=r"has 0 s of its 0.277778 h .*RETRAIN_GPU_SECONDS_PER_DAY.*00:00 UTC"):
        budgets.grant(42, "s3", 600)
    assert budgets.grant(7, "other-installation", 600).seconds == 600  # one installation spends its own
    first.close()  # used a moment of its 600: the rest goes back
    assert 599 < budgets.left(42) <= 600
    again = budgets.grant(42, "s2", 300)  # a redelivered session's new grant replaces its old hold
    assert again.seconds == 300 and 899 < budgets.left(42) + 300 <= 1000


def test_concurrent_grants_from_many_threads_never_overspend(redis_url: str, clean_redis: redis.Redis) -> None:
    budgets = SessionBudgets(redis.Redis.from_url(redis_url), per_day_s=3600)
    granted: list[float] = []

    def ask(n: int) -> None:
        try:
            granted.append(budgets.grant(42, f"s{n}", 500).seconds)
        except BudgetSpent:
            granted.append(0.0)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 3600 and sorted(granted)[-8:] == [100] + [500] * 7


def test_charges_move_time_from_the_hold_to_the_days_use(clean_redis: redis.Redis) -> None:
    budgets = SessionBudgets(clean_redis, per_day_s=100)
    budgets.charge(f"retrain:budget:42:{utc_day()}", "s1", 95)  # a lost worker's charges stay charged
    with pytest.raises(BudgetSpent) as refused:
        budgets.require_some_left(42)
    assert refused.value.left_s == pytest.approx(5)


# -- which delivery owns a session; how often a session's worker was lost ------------------------------------
def test_the_first_delivery_owns_a_session_and_a_replay_does_not(clean_redis: redis.Redis) -> None:
    starts = SessionStarts(clean_redis, remember_s=60)
    assert starts.claim("sid", "delivery-1") is None
    assert starts.claim("sid", "delivery-1") is None  # the same delivery again: a retry, carries on
    assert starts.claim("sid", "replayed") == "delivery-1"
    starts.release("sid", "replayed")  # only the owner releases
    assert starts.claim("sid", "replayed") == "delivery-1"
    starts.release("sid", "delivery-1")
    assert starts.claim("sid", "replayed") is None


def test_starts_that_never_came_back_are_counted(clean_redis: redis.Redis) -> None:
    losses = WorkerLosses(clean_redis, ttl_s=60)
    assert [losses.started("sid") for _ in range(3)] == [0, 1, 2]  # three starts, no way out seen
    losses.returned("sid")  # the third came back (it waited for its run, say): two losses so far
    assert losses.started("sid") == 2


# -- the session honours what the surroundings allow ---------------------------------------------------------
def test_a_session_stops_at_its_granted_time_and_says_whose_limit_it_was(tmp_path) -> None:
    import asyncio

    from tests.repos import make_local_repo
    from workers.session.progress import STOPPED_AT_TIME_LIMIT
    from workers.session.repos import LocalGitRepository
    from workers.session.session import Controls, SessionRequest, TimeCap, run_session
    from workers.session.store import CheckpointStore

    repo = LocalGitRepository(make_local_repo(tmp_path / "repo"))
    store = CheckpointStore(f"file://{tmp_path / 'store'}")

    async def granted() -> TimeCap:
        return TimeCap(1.0, "this installation's session time left today (RETRAIN_GPU_SECONDS_PER_DAY)")

    result = asyncio.run(run_session(repo, store, SessionRequest("capped", max_iters=100_000), store_prefix="o/r",
                                     controls=Controls(on_start=granted, max_time_s=3600)))
    assert result.facts.stopped == STOPPED_AT_TIME_LIMIT and result.facts.end_iteration < 100_000
    assert any("stopped at this installation's session time left today" in n for n in result.facts.notes)


def test_a_session_over_the_limits_is_refused_when_it_starts(tmp_path) -> None:
    import asyncio

    from app.errors import SessionError
    from tests.repos import make_local_repo
    from workers.session.repos import LocalGitRepository
    from workers.session.session import Controls, SessionRequest, run_session
    from workers.session.store import CheckpointStore

    repo = LocalGitRepository(make_local_repo(tmp_path / "repo"))
    store = CheckpointStore(f"file://{tmp_path / 'store'}")
    with pytest.raises(SessionError, match=r"max_iters is 50, over this App's limit of 10 \(RETRAIN_MAX_ITERS"):
        asyncio.run(run_session(repo, store, SessionRequest("over", max_iters=50), store_prefix="o/r",
                                controls=Controls(limits=Limits(max_iters=10))))
    assert not (tmp_path / "store").exists()  # refused before anything was read or written
