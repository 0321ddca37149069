"""Per-repository cron entries kept in Redis with celery-redbeat, so that one beat process (the Procfile's
`beat`) fires them and the events worker can add, change and drop them while it runs. GitHub sends no
webhook for a schedule; each entry fires `retrain.scheduled_session` on the events queue with plain values.

Keys (redbeat stores an entry named N at `REDBEAT_KEY_PREFIX + N`):
- `retrain:schedule:<owner>/<repo>:<n>`: the entry for item n of the config's `schedule` list;
- `retrain:schedules:repo:<owner>/<repo>`: the names of that repository's entries;
- `retrain:schedules:installation:<id>`: the repositories with entries, so an uninstall finds them all.

An invalid config leaves the entries as they are (DESIGN §5: the last valid config keeps serving
schedules) and is reported with a failed check run on the default branch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
from celery import Celery
from celery.schedules import crontab
from gidgethub import GitHubException  # REST (HTTPException) and GraphQL errors alike
from redbeat.schedulers import RedBeatSchedulerEntry, ensure_conf, get_redis
from redis import Redis
from redis.lock import Lock

from app.config.limits import Limits, schedule_problems
from app.config.repo_config import CONFIG_PATH, RepoConfig, parse_repo_config
from app.config.settings import Settings
from app.errors import ConfigError
from app.features.check_runs import notice_id
from app.features.decisions import RemoveSchedules, SyncSchedules
from app.github.auth import TokenCache
from app.github.client import GitHubClient, installation_client
from app.queues import EVENTS_QUEUE, SCHEDULED_SESSION_TASK
from app.writing import check_output
from workers.celery_app import REDBEAT_KEY_PREFIX

log = logging.getLogger(__name__)
ENTRY_NAME = "schedule:{repo}:{index}"
REPO_INDEX = "retrain:schedules:repo:{}"
INSTALLATION_INDEX = "retrain:schedules:installation:{}"
LOCK = "retrain:schedules:lock:{}"
# Reading configs and reporting a bad one; nothing else.
SCHEDULE_PERMISSIONS = {"contents": "read", "checks": "write", "metadata": "read"}
# A firing the events worker has not picked up within an hour is dropped: the next slot comes anyway, and
# a stopped worker should not find a pile of sessions when it starts again.
ENTRY_EXPIRES_S = 3600


@dataclass(frozen=True)
class ScheduleSpec:
    """One cron entry as the config asks for it."""

    name: str
    cron: str
    profile: str


# -- pure: names, validation, entries ------------------------------------------------------------------------
def entry_name(repo: str, index: int) -> str:
    return ENTRY_NAME.format(repo=repo, index=index)


def parse_cron(cron: str, field: str) -> crontab:
    """Five cron fields (UTC) as celery reads them; a bad one is a config error naming the field."""
    try:
        return crontab.from_string(cron)
    except ValueError as exc:
        raise ConfigError(f"{CONFIG_PATH} is invalid: {field}: `{cron}` is not a cron expression ({exc})") from exc


def schedule_specs(repo: str, config: RepoConfig, limits: Limits) -> list[ScheduleSpec]:
    """The entries `config.schedule` asks for, checked as a whole: one bad item rejects the lot, so that a
    half-applied schedule never runs (their crons parse and their profiles exist: the config's own
    validation says so; how many and how often is the operator's say, app/config/limits.py)."""
    problems = schedule_problems(config, limits)
    if problems:
        raise ConfigError(f"{CONFIG_PATH}: schedule refused: {'; '.join(problems)}")
    specs = []
    for index, item in enumerate(config.schedule):
        parse_cron(item.cron, f"schedule.{index}.cron")
        specs.append(ScheduleSpec(entry_name(repo, index), item.cron, item.profile))
    return specs


def entry_kwargs(installation_id: int, repo: str, spec: ScheduleSpec) -> dict[str, Any]:
    """What the fired task gets: plain values, never a token."""
    return {"installation_id": installation_id, "repo": repo, "profile": spec.profile, "cron": spec.cron}


def build_entry(
    app: Celery, installation_id: int, repo: str, spec: ScheduleSpec, last_run_at: datetime | None = None
) -> RedBeatSchedulerEntry:
    """`last_run_at` defaults to now, so a new entry first fires at its next slot, not at once."""
    schedule = parse_cron(spec.cron, spec.name)
    schedule.app = app
    return RedBeatSchedulerEntry(
        spec.name, SCHEDULED_SESSION_TASK, schedule, kwargs=entry_kwargs(installation_id, repo, spec),
        options={"queue": EVENTS_QUEUE, "expires": ENTRY_EXPIRES_S}, app=app, last_run_at=last_run_at,
    )


# -- thin Redis I/O ----------------------------------------------------------------------------------------
class ScheduleStore:
    """Entries through redbeat, plus two small indexes, so that nothing ever scans the keyspace."""

    def __init__(self, app: Celery) -> None:
        ensure_conf(app)
        self.app = app

    @classmethod
    def for_url(cls, redis_url: str) -> ScheduleStore:
        """A store on its own Celery app (no broker use), for processes other than the worker's."""
        app = Celery("retrain-schedules", set_as_current=False)
        app.conf.update(redbeat_redis_url=redis_url, redbeat_key_prefix=REDBEAT_KEY_PREFIX, redbeat_redis_options={})
        return cls(app)

    @property
    def redis(self) -> Redis:
        return get_redis(self.app)

    def lock(self, repo: str) -> Lock:
        """Held while a repository's config is read and its entries written, so that a slower reader of an
        older config never overwrites what a newer one wrote."""
        return self.redis.lock(LOCK.format(repo), timeout=120, blocking_timeout=60)

    def key(self, name: str) -> str:
        return RedBeatSchedulerEntry.generate_key(self.app, name)

    def names(self, repo: str) -> set[str]:
        return set(self.redis.smembers(REPO_INDEX.format(repo)))

    def repos(self, installation_id: int) -> set[str]:
        return set(self.redis.smembers(INSTALLATION_INDEX.format(installation_id)))

    def definition(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(RedBeatSchedulerEntry.load_definition(self.key(name), app=self.app))
        except KeyError:
            return None

    def entries(self, repo: str) -> dict[str, RedBeatSchedulerEntry]:
        """The repository's entries as beat will load them."""
        found = {}
        for name in sorted(self.names(repo)):
            try:
                found[name] = RedBeatSchedulerEntry.from_key(self.key(name), app=self.app)
            except KeyError:
                continue
        return found

    def replace(self, installation_id: int, repo: str, specs: Iterable[ScheduleSpec]) -> int:
        """Make the repository's entries exactly `specs`; returns how many were written. Unchanged entries
        are left alone (they keep their last run); a changed one starts afresh from now."""
        wanted = {spec.name: spec for spec in specs}
        for name in self.names(repo) - set(wanted):
            RedBeatSchedulerEntry(name, app=self.app).delete()
        written = 0
        for spec in wanted.values():
            entry = build_entry(self.app, installation_id, repo, spec)
            current = self.definition(spec.name)
            if current and (current.get("task"), current.get("kwargs"), current.get("options")) == (
                entry.task, entry.kwargs, entry.options
            ):
                continue
            RedBeatSchedulerEntry(spec.name, app=self.app).delete()  # a fresh last_run_at, not the old cron's
            entry.save()
            written += 1
        with self.redis.pipeline() as pipe:
            pipe.delete(REPO_INDEX.format(repo))
            if wanted:
                pipe.sadd(REPO_INDEX.format(repo), *wanted)
                pipe.sadd(INSTALLATION_INDEX.format(installation_id), repo)
            else:
                pipe.srem(INSTALLATION_INDEX.format(installation_id), repo)
            pipe.execute()
        return written

    def remove(self, installation_id: int, repo: str) -> int:
        """Drop the repository's entries that belong to this installation (a repository transferred to
        another installation keeps the new one's); returns how many were dropped."""
        dropped = 0
        for name in self.names(repo):
            definition = self.definition(name)
            if definition and (definition.get("kwargs") or {}).get("installation_id") != installation_id:
                continue
            RedBeatSchedulerEntry(name, app=self.app).delete()
            self.redis.srem(REPO_INDEX.format(repo), name)
            dropped += 1
        self.redis.srem(INSTALLATION_INDEX.format(installation_id), repo)
        return dropped


# -- carrying out the planners' decisions (the events worker) -------------------------------------------------
async def apply_schedules(
    settings: Settings, decision: SyncSchedules | RemoveSchedules, store: ScheduleStore,
    tokens: TokenCache | None = None,
) -> str:
    """The outcome in a few words. Removing needs no GitHub call: after an uninstall there is no token."""
    if isinstance(decision, RemoveSchedules):
        repos = set(decision.repos)
        if decision.whole_installation:
            repos |= store.repos(decision.installation_id)
        dropped = sum(store.remove(decision.installation_id, repo) for repo in sorted(repos))
        return f"removed {dropped} schedule entries of {len(repos)} repositories"
    outcomes = []
    async with installation_client(
        settings, decision.installation_id, permissions=SCHEDULE_PERMISSIONS, tokens=tokens
    ) as gh:
        for repo in decision.repos:
            try:
                outcomes.append(await sync_repository(gh, store, decision.installation_id, repo, settings.limits))
            except (GitHubException, aiohttp.ClientError) as exc:  # one unreadable repository spoils no other
                log.warning("schedules of %s not updated: %s", repo, exc, extra={"repo": repo})
                outcomes.append(f"{repo}: not updated ({type(exc).__name__})")
    return "schedules: " + "; ".join(outcomes)


async def sync_repository(
    gh: GitHubClient, store: ScheduleStore, installation_id: int, repo: str, limits: Limits
) -> str:
    """Read the config at the default branch and make the entries match; a missing file means the defaults,
    which have no schedule."""
    with store.lock(repo):
        text = await gh.read_file(repo, CONFIG_PATH, None)
        try:
            specs = schedule_specs(repo, parse_repo_config(text), limits)
        except ConfigError as exc:
            kept = len(store.names(repo))
            log.warning("%s: %s; keeping its %d schedule entries", repo, exc, kept, extra={"repo": repo})
            await report_invalid(gh, repo, str(exc), kept)
            return f"{repo}: invalid config, kept {kept} entries"
        written = store.replace(installation_id, repo, specs)
    return f"{repo}: {len(specs)} entries ({written} written)"


async def report_invalid(gh: GitHubClient, repo: str, reason: str, kept: int) -> None:
    """A failed check run on the default branch's head: where people look for what Retrain made of a push."""
    head = await gh.branch_head(repo, None)
    still = f"The {kept} schedule entries of the last valid config keep running." if kept else "No schedule runs."
    await gh.create_check_run(
        repo, name=check_output.CHECK_NAME, head_sha=head.oid, external_id=notice_id(), status="completed",
        conclusion="failure",
        output={"title": f"Schedule not updated: {CONFIG_PATH} is invalid", "summary": f"{reason}\n\n{still}"},
    )
