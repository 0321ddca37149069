"""The events worker's job: carry out what `app.features` decided — check the sender's permission and the
repository config, react, reply, open a queued check run, and enqueue the training session.
Runs on the CPU `events` queue; fast, no training stack.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from http import HTTPStatus
from typing import Any

import kombu.exceptions
import redis
from gidgethub import BadRequest

from app.config.limits import Limits, profile_problems
from app.config.repo_config import CONFIG_PATH, RepoConfig, parse_repo_config
from app.config.settings import Settings
from app.errors import ConfigError
from app.features import plan
from app.features.check_runs import external_id, notice_id
from app.features.decisions import (
    CancelSessions,
    Ignore,
    Origin,
    RejectCommand,
    RemoveSchedules,
    SampleText,
    ShowHelp,
    ShowHistory,
    ShowStatus,
    StartTraining,
    SyncSchedules,
)
from app.github.auth import EVENTS_PERMISSIONS, PULL_PERMISSIONS, TokenCache
from app.github.client import CheckRun, GitHubClient, PullRequest, installation_client
from app.github.retry import requested_wait_s
from app.writing import check_output, replies
from workers.coordination.approvals import PullApprovals
from workers.coordination.budget import BudgetSpent, SessionBudgets
from workers.coordination.live import LiveSessions, status_rows
from workers.coordination.live import for_url as live_for_url
from workers.coordination.run_queue import RunQueue
from workers.coordination.sample_quota import SampleQuota
from workers.coordination.starts import SessionStarts
from workers.jobs.history import read_history, table_rows
from workers.jobs.pull_requests import pull_refusal, pull_request_fields, queue_name
from workers.jobs.schedules import ScheduleStore, apply_schedules

log = logging.getLogger(__name__)
MAX_EVENT_WAIT_S = 15 * 60
UNREACHABLE = redis.ConnectionError | redis.TimeoutError | kombu.exceptions.OperationalError  # Redis, the broker too
SESSION_NAMESPACE = uuid.UUID("0b5e3c59-8d0f-4d2b-9a55-2f1f8b6f6a10")

EnqueueSession = Callable[[dict[str, Any]], None]


def session_id_for(key: str) -> str:
    """Stable per event, so a redelivered or retried events task names the same session."""
    return uuid.uuid5(SESSION_NAMESPACE, key).hex


def session_id_of(origin: Origin) -> str:
    """From what GitHub signed (`Origin.event_key`), so that a new delivery id makes no new session; from
    the delivery id where nothing else identifies the event (the App's own schedule firings)."""
    return session_id_for(origin.event_key or origin.delivery_id or uuid.uuid4().hex)


def signed_age_s(origin: Origin, now: float | None = None) -> float | None:
    """How long ago the event happened by its signed timestamp; None when it carries none."""
    try:
        signed = datetime.fromisoformat(origin.signed_at) if origin.signed_at else None
    except ValueError:
        return None
    if signed is None or signed.tzinfo is None:
        return None
    return (time.time() if now is None else now) - signed.timestamp()


def wait_before_retry_s(exc: BaseException, retries: int, first_wait_s: float, rand: random.Random | None = None
                        ) -> float | None:
    """How long an events task waits before carrying the event out again after `exc`; None: not again.

    GitHub's transient answers (5xx, dropped connections, rate limits; see app/github/retry.py) and Redis
    unreachable are worth another go once the per-call retries gave up: the receiver answered 202 already, so
    GitHub counts the delivery a success and will never send it again. Doubling from `first_wait_s`,
    jittered over its upper half, never sooner than GitHub asked."""
    asked = 0.0 if isinstance(exc, UNREACHABLE) else requested_wait_s(exc)
    if asked is None:
        return None
    backoff = min(first_wait_s * 2**retries, MAX_EVENT_WAIT_S)
    return max(asked, (rand or random).uniform(backoff / 2, backoff))


class CommentGone(Exception):
    """The comment that carried the command no longer exists."""


@dataclass(frozen=True)
class Admission:
    """What an event passes before it is carried out (it is new, not a replayed body), and a session before
    it is queued: the operator's limits allow it, and its installation has session time left today (both
    checked again when it starts)."""

    starts: SessionStarts
    limits: Limits
    budgets: SessionBudgets
    run_queue: RunQueue
    approvals: PullApprovals | None = None  # none: no fork's pull request can be approved

    @classmethod
    def for_settings(cls, settings: Settings) -> Admission:
        client = redis.Redis.from_url(settings.redis_url)
        return cls(SessionStarts(client, settings.delivery_ttl_s), settings.limits,
                   SessionBudgets(client, settings.gpu_seconds_per_day),
                   RunQueue(client, settings.visibility_timeout_s), PullApprovals(client))


async def handle_event(
    settings: Settings, event: str, delivery_id: str, payload: dict[str, Any], enqueue_session: EnqueueSession,
    tokens: TokenCache | None = None, schedules: ScheduleStore | None = None, live: LiveSessions | None = None,
    admission: Admission | None = None, acted: list[str] | None = None, enqueue_sample: EnqueueSession | None = None,
) -> str:
    """The outcome in a few words (logged by the task). `acted` collects what was done that carrying the
    event out again would do twice (a session enqueued, a cancel asked): only with it empty may a failed
    event be tried again. `enqueue_sample` hands a `/retrain sample` to a worker with the training stack
    (workers/tasks.py); without it, sampling is answered as unavailable here."""
    decision = plan(event, delivery_id, payload)
    if isinstance(decision, Ignore):
        return f"ignored: {decision.reason}"
    if isinstance(decision, SyncSchedules | RemoveSchedules):  # installation, installation_repositories, push
        return await apply_schedules(settings, decision, schedules or ScheduleStore.for_url(settings.redis_url), tokens)
    age = signed_age_s(decision.origin)
    if age is not None and age > settings.delivery_ttl_s:  # older than replays are remembered: one
        return (f"ignored: the event was signed {age / 86400:.1f} days ago, longer ago than deliveries are "
                "remembered (RETRAIN_DELIVERY_TTL_S)")
    admission = admission or Admission.for_settings(settings)
    event_id = session_id_of(decision.origin)
    delivery = decision.origin.delivery_id or event_id
    earlier = admission.starts.claim(event_id, delivery)
    if earlier is not None:  # the same signed event under another delivery id: a replay, answered with silence
        return f"ignored: this event was handled under delivery {earlier}; a replay does nothing"
    acted = [] if acted is None else acted

    def enqueue(message: dict[str, Any]) -> None:
        enqueue_session(message)
        acted.append("enqueued")

    try:
        return await _carry_out(settings, decision, enqueue, tokens, live, admission, acted, enqueue_sample)
    except CommentGone:
        return "ignored: the comment was deleted before its command was carried out"
    except BaseException:
        if not acted:  # nothing done yet: another delivery of the event (GitHub's redelivery) may carry it out
            admission.starts.release(event_id, delivery)
        raise


async def _carry_out(
    settings: Settings,
    decision: StartTraining | RejectCommand | ShowHelp | ShowStatus | CancelSessions | ShowHistory | SampleText,
    enqueue_session: EnqueueSession, tokens: TokenCache | None,
    live: LiveSessions | None, admission: Admission, acted: list[str], enqueue_sample: EnqueueSession | None = None,
) -> str:
    origin = decision.origin
    pull_number = origin.pull_number if isinstance(decision, StartTraining) else None  # what reads the PR
    async with installation_client(
        settings, origin.installation_id, repo=origin.repo, permissions=EVENTS_PERMISSIONS, tokens=tokens,
        optional_permissions=PULL_PERMISSIONS if pull_number is not None else None,
    ) as gh:
        feedback = Feedback(gh, origin)
        if isinstance(decision, RejectCommand):
            await feedback.react("confused")
            await feedback.problem(replies.rejected(origin, decision.reason), decision.reason)
            return "rejected: malformed command"
        try:
            pull = await gh.pull_request(origin.repo, pull_number) if pull_number is not None else None
        except BadRequest as exc:
            if exc.status_code != HTTPStatus.FORBIDDEN:
                raise
            reason = ("this installation of the App has not been granted the `pull_requests` permission (read), "
                      "which reading a pull request needs: an owner accepts it in the installation's settings")
            await feedback.react("confused")
            await feedback.problem(replies.failed(origin, reason), reason)
            return "refused: the installation lacks the pull_requests permission"
        if pull is not None and origin.issue_number is None:  # a pull request's button: answer on the pull request
            origin = replace(origin, issue_number=pull.number)
            decision = replace(decision, origin=origin)
            feedback = Feedback(gh, origin)
        # A pull request runs with the default branch's config (the repository's policy, which the session's
        # worker reads too), never the one its head carries nor one of a base branch its author picked.
        config_at = None if pull is not None else origin.head_sha or origin.ref
        try:
            config = parse_repo_config(await gh.read_file(origin.repo, CONFIG_PATH, config_at))
        except ConfigError as exc:
            await feedback.problem(replies.failed(origin, str(exc)), str(exc))
            return "rejected: invalid repository config"
        if isinstance(decision, ShowHelp):
            await feedback.reply(replies.show_help(origin, sorted(config.profiles)))
            return "answered: help"
        if isinstance(decision, ShowHistory):
            found = await read_history(gh, origin.repo, config, origin.ref)
            rows = table_rows(found, f"{settings.web_url}/{origin.repo}/commit/")
            await feedback.reply(replies.history(origin, rows, found.total, list(found.runs)))
            return "answered: history"
        if isinstance(decision, SampleText):
            return await ask_sample(settings, gh, feedback, config, decision, enqueue_sample, acted)
        live = live or live_for_url(settings.redis_url)
        if isinstance(decision, ShowStatus):
            await feedback.reply(replies.status(origin, status_rows(live.of_repo(origin.repo))))
            return "answered: status"
        if isinstance(decision, CancelSessions):
            if not await allowed(gh, feedback, config, origin):
                return f"refused: {origin.sender} may not cancel"
            asked = live.cancel(origin.repo)
            acted.append("cancelled")
            await feedback.reply(replies.cancelled(origin, [s.session_id for s in asked]))
            return f"cancel requested for {len(asked)} session(s)"
        return await start(gh, feedback, config, decision, enqueue_session, admission, pull)


async def start(
    gh: GitHubClient, feedback: Feedback, config: RepoConfig, decision: StartTraining, enqueue: EnqueueSession,
    admission: Admission, pull: PullRequest | None = None,
) -> str:
    origin = decision.origin
    if origin.workflow is not None and origin.workflow not in config.workflows:
        return f"ignored: workflow {origin.workflow} is not listed under `workflows` in {CONFIG_PATH}"
    session_id = session_id_of(origin)
    if origin.trigger not in ("workflow_run", "schedule") and not await allowed(gh, feedback, config, origin):
        return f"refused: {origin.sender} may not start sessions"
    if pull is not None:
        refusal = pull_refusal(pull, origin, decision, admission.approvals)
        if refusal is not None:
            await feedback.react("confused")
            await feedback.problem(replies.rejected(origin, refusal), refusal)
            return f"refused: {refusal}"
        # The session reads the base branch's registry and the pull request's text; its check run goes on
        # the pull request's head.
        origin = replace(origin, ref=pull.base_ref, head_sha=pull.head_sha)
        decision = replace(decision, origin=origin)
    if decision.profile not in config.profiles:
        reason = f"unknown profile `{decision.profile}`; valid profiles: {', '.join(sorted(config.profiles))}"
        await feedback.react("confused")
        await feedback.problem(replies.rejected(origin, reason), reason)
        return "rejected: unknown profile"
    over = profile_problems(decision.profile, config.profiles[decision.profile], admission.limits, decision.max_iters)
    try:
        admission.budgets.require_some_left(origin.installation_id)
    except BudgetSpent as exc:
        over.append(str(exc))
    if over:
        reason = "; ".join(over)
        await feedback.react("confused")
        await feedback.problem(replies.failed(origin, reason), reason)
        return "refused: over the App's limits"
    try:
        await feedback.react("eyes")
    except CommentGone:  # deleted after an earlier go opened the session's check run: close it
        if (known := remembered_check_run(admission.starts, session_id)) is not None:
            await gh.update_check_run(origin.repo, known.id, status="completed", conclusion="cancelled",
                                      output=check_output.withdrawn_output())
        raise
    run_queue = admission.run_queue
    run = queue_name(config.run_name(decision.profile), pull)
    claim = run_queue.claim(origin.repo, run, session_id)
    if claim.kind == "coalesced":
        await feedback.reply(replies.coalesced(origin, decision.profile, claim.other))
        return f"coalesced into session {claim.other}"
    try:
        check = await queued_check_run(gh, admission.starts, decision, session_id, config)
        enqueue(
            {
                "origin": origin.to_message(),
                "request": {
                    "session_id": session_id, "profile": decision.profile, "max_iters": decision.max_iters,
                    "trigger": origin.trigger, "sender": origin.sender, "delivery_id": origin.delivery_id,
                    "fresh": decision.fresh, "max_checkpoints": decision.max_checkpoints, "branch": origin.ref,
                    **({} if pull is None else pull_request_fields(pull)),
                },
                "check_run_id": check.id,
                "check_url": check.html_url,
                "run": run,
                "time_limit_s": config.profiles[decision.profile].time_limit_s,
            }
        )
    except BaseException:
        run_queue.release(origin.repo, run, session_id)  # not queued after all: don't let followers join it
        raise
    reply = await feedback.reply(replies.queued(origin, decision.profile, check.html_url,
                                                behind=claim.other if claim.kind == "follow_up" else None))
    if reply is not None:  # the session's worker edits this reply as it goes, rather than adding more
        admission.starts.remember_reply(session_id, int(reply["id"]))
    return f"enqueued session {session_id}" + (f" behind {claim.other}" if claim.kind == "follow_up" else "")


async def ask_sample(
    settings: Settings, gh: GitHubClient, feedback: Feedback, config: RepoConfig, decision: SampleText,
    enqueue_sample: EnqueueSession | None, acted: list[str],
) -> str:
    """Permission, a known profile and the repository's hourly quota, then the sample goes to a train worker,
    which replies with it (workers/jobs/sample_job.py)."""
    origin = decision.origin
    if not await allowed(gh, feedback, config, origin, action="asking for a sample"):
        return f"refused: {origin.sender} may not ask for samples"
    if decision.profile not in config.profiles:
        reason = f"unknown profile `{decision.profile}`; valid profiles: {', '.join(sorted(config.profiles))}"
        await feedback.react("confused")
        await feedback.reply(replies.rejected(origin, reason))
        return "rejected: unknown profile"
    if enqueue_sample is None or settings.samples_per_hour == 0:
        await feedback.reply(replies.sample_failed(origin, "sampling is turned off on this App "
                                                           "(RETRAIN_SAMPLES_PER_HOUR is 0)"))
        return "refused: sampling is off"
    taken = SampleQuota(redis.Redis.from_url(settings.redis_url), settings.samples_per_hour).take(origin.repo)
    if not taken.ok:
        await feedback.react("confused")
        await feedback.reply(replies.sample_limited(origin, settings.samples_per_hour, taken.wait_s))
        return "refused: over the repository's samples per hour"
    # Not yet `acted`: should the reaction or the enqueue fail, trying again (and counting twice) beats silence.
    await feedback.react("eyes")
    enqueue_sample({"origin": origin.to_message(), "profile": decision.profile, "prompt": decision.prompt})
    acted.append("enqueued a sample")
    return f"enqueued a sample of {decision.profile}"


async def queued_check_run(gh: GitHubClient, starts: SessionStarts, decision: StartTraining, session_id: str,
                           config: RepoConfig) -> CheckRun:
    """The session's one queued check run: the one an earlier go at this event made (remembered, or found by
    its external id on the commit), else a new one."""
    origin = decision.origin
    if (known := remembered_check_run(starts, session_id)) is not None:
        return known
    head_sha = origin.head_sha or (await gh.branch_head(origin.repo, config.branch or origin.ref)).oid
    check = await gh.create_check_run(
        origin.repo, name=check_output.check_name(decision.profile), head_sha=head_sha, status="queued",
        external_id=external_id(decision.profile, session_id, origin.pull_number), look_first=True,
        output=check_output.queued_output(decision.profile, origin.trigger, origin.sender),
    )
    starts.remember_check_run(session_id, {"id": check.id, "html_url": check.html_url})
    return check


def remembered_check_run(starts: SessionStarts, session_id: str) -> CheckRun | None:
    known = starts.check_run_of(session_id)
    return None if known is None else CheckRun(int(known["id"]), known.get("html_url"))


async def allowed(gh: GitHubClient, feedback: Feedback, config: RepoConfig, origin: Origin,
                  action: str = "starting a training session") -> bool:
    """Whether the sender has the config's minimum permission; if not, they are told (👎 and why)."""
    permission = await gh.permission(origin.repo, origin.sender or "")
    if config.allows(permission):
        return True
    await feedback.react("-1")
    await feedback.problem(replies.refused(origin, permission, config.permission, action),
                           f"@{origin.sender} has `{permission}` permission; `{config.permission}` is needed.")
    return False


class Feedback:
    """Reactions and replies go to a comment when there is one; otherwise a problem becomes a failed
    check run, the place people look for what a workflow trigger did."""

    def __init__(self, gh: GitHubClient, origin: Origin) -> None:
        self._gh = gh
        self._origin = origin
        self._reacted = False

    async def react(self, content: str) -> None:
        """The first thing done for a comment: GitHub's 404 here means it was deleted meanwhile, and a
        deleted command is withdrawn, not carried out (nor retried)."""
        if self._origin.comment_id is None:
            return
        try:
            await self._gh.add_reaction(self._origin.repo, self._origin.comment_id, content)
        except BadRequest as exc:
            if exc.status_code == HTTPStatus.NOT_FOUND and not self._reacted:
                raise CommentGone(self._origin.comment_id) from exc
            raise
        self._reacted = True

    async def reply(self, body: str) -> dict[str, Any] | None:
        if self._origin.issue_number is None:
            return None
        return await self._gh.create_comment(self._origin.repo, self._origin.issue_number, body)

    async def problem(self, comment: str, summary: str) -> None:
        if self._origin.issue_number is not None:
            await self.reply(comment)
            return
        head = self._origin.head_sha or (await self._gh.branch_head(self._origin.repo, self._origin.ref)).oid
        await self._gh.create_check_run(
            self._origin.repo, name=check_output.CHECK_NAME, head_sha=head, external_id=notice_id(),
            status="completed", conclusion="failure", output=check_output.failed_output(summary),
        )
