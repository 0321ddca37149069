"""Hostile payloads: property-based mutations of GitHub's real webhook payloads (hypothesis) never produce a
5xx from the receiver, nor an exception from the planners or the events worker's job."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import uuid
from typing import Any

import orjson
import redis
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.config.settings import Settings
from app.features import plan
from app.features.decisions import Ignore, RemoveSchedules, SyncSchedules
from app.features.well_formed import problem
from app.queues import EVENTS_QUEUE, EVENTS_TASK
from app.web.server import create_app, signature_for
from tests.conftest import INSTALLATION_ID, REPO, fixtures_dir
from tests.emulator import GitHubEmulator
from tests.payloads import comment_event
from workers.jobs.events import handle_event

SECRET = "hostile-test-secret"
EVENTS = ("issue_comment", "workflow_dispatch", "workflow_run", "check_run", "installation",
          "installation_repositories", "push")


def real_examples() -> list[tuple[str, dict[str, Any]]]:
    """GitHub's own examples of every event Retrain handles, plus a permitted `/retrain` comment."""
    examples = [("issue_comment", comment_event("/retrain ci max_iters=5", repo=REPO,
                                                installation_id=INSTALLATION_ID))]
    root = fixtures_dir()
    if root is None:
        print("NOTE: RETRAIN_FIXTURES unset: mutating Retrain's own comment payload only")
        return examples
    for event in EVENTS:
        for path in sorted((root / "github/webhook-examples" / event).glob("*.json")):
            examples.append((event, json.loads(path.read_text())))
    return examples


EXAMPLES = real_examples()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, examples: list[tuple[str, dict[str, Any]]] | None = None) -> tuple[str, Any]:
    """A real payload with a few subtrees replaced by arbitrary JSON or deleted; sometimes the whole body."""
    event, payload = draw(st.sampled_from(examples or EXAMPLES))
    payload = copy.deepcopy(payload)
    if draw(st.integers(0, 9)) == 0:
        return event, draw(json_values)
    for _ in range(draw(st.integers(1, 4))):
        targets = paths(payload)[1:]
        if not targets:
            break
        path = draw(st.sampled_from(targets))
        parent = payload
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return event, payload


def same(value: Any, sent: Any) -> bool:
    """Equal and of the same type: 42.0 or True is not the installation 42 or 1 that GitHub would send."""
    return type(value) is type(sent) and value == sent


def _at(payload: Any, *path: str) -> Any:
    for step in path:
        payload = payload.get(step) if isinstance(payload, dict) else None
    return payload


@settings(max_examples=400, deadline=None)
@given(st.one_of(mutated(), mutated(EXAMPLES[:1])))  # the second: a `/retrain` comment, mostly still acted on
def test_a_decision_says_only_what_the_payload_says(case: tuple[str, Any]) -> None:
    """Whatever a mutated payload holds, a decision that acts names the payload's own repository,
    installation, comment and issue, unchanged in value and type, and passes the well-formed check; it
    never names something the payload does not (a coerced id, a default filled in)."""
    event, payload = case
    decision = plan(event, "hostile-delivery", payload)
    if isinstance(decision, Ignore):
        assert decision.reason
        return
    assert problem(decision) is None, decision
    if isinstance(decision, SyncSchedules | RemoveSchedules):
        assert same(decision.installation_id, _at(payload, "installation", "id")), decision
        return
    origin = decision.origin
    assert same(origin.repo, _at(payload, "repository", "full_name")), decision
    assert same(origin.installation_id, _at(payload, "installation", "id")), decision
    assert origin.delivery_id == "hostile-delivery"
    if event == "issue_comment":
        assert same(origin.comment_id, _at(payload, "comment", "id")), decision
        assert same(origin.issue_number, _at(payload, "issue", "number")), decision
        assert origin.line is not None and origin.line in str(_at(payload, "comment", "body")), decision
    assert origin.event_key is not None and origin.repo in origin.event_key, decision


def queued_events(client: redis.Redis) -> list[list[Any]]:
    """The events tasks' arguments on the real queue, decoded as a Celery worker decodes them."""
    args = []
    for raw in reversed(client.lrange(EVENTS_QUEUE, 0, -1)):  # pushed on the left, taken from the right
        message = json.loads(raw)
        assert message["headers"]["task"] == EVENTS_TASK
        args.append(json.loads(base64.b64decode(message["body"]))[0])
    return args


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mutated(), raw=st.binary(max_size=200))
def test_the_receiver_forwards_signed_json_as_sent_and_refuses_the_rest(
    redis_url: str, clean_redis: redis.Redis, case: tuple[str, Any], raw: bytes
) -> None:
    """Never a 5xx; a signed JSON body is queued once, byte for byte what GitHub signed (the events worker
    judges it, with the planners above); anything that is not JSON is refused (4xx) and queues nothing."""
    event, payload = case
    clean_redis.delete(EVENTS_QUEUE)
    bodies = [json.dumps(payload).encode(), raw]

    async def go() -> list[int]:
        app = create_app(Settings(_env_file=None, webhook_secret=SECRET, redis_url=redis_url))
        async with TestClient(TestServer(app)) as client:
            statuses = []
            for n, body in enumerate(bodies):
                headers = {"content-type": "application/json", "x-github-event": event,
                           "x-github-delivery": f"hostile-{n}-{uuid.uuid4()}",
                           "x-hub-signature-256": signature_for(body, SECRET)}
                resp = await client.post("/webhook", data=body, headers=headers)
                statuses.append(resp.status)
            return statuses

    statuses = asyncio.run(go())
    assert all(status < 500 for status in statuses), statuses
    expected = []
    for body, status in zip(bodies, statuses, strict=True):
        try:
            parsed = orjson.loads(body)  # the receiver's parser: strict JSON (json.dumps writes Infinity)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            assert status == 202, (body, status)
            expected.append([event, json.loads(body)])  # as the worker reads it (integers past 64 bits too)
        else:  # not JSON, or JSON that is not an object: no event GitHub sends
            assert 400 <= status < 500, (body, status)
    assert [[e, p] for e, _, p in queued_events(clean_redis)] == expected


def happened(emu: GitHubEmulator, event: str, payload: Any) -> None:
    """A delivered event happened on GitHub: the issue and comment it names exist there. Make them exist in the
    emulator too, where the mutated payload still names them in a form it can hold."""
    # Not when it names no repository the emulator serves, or ids no issue or comment could have.
    with contextlib.suppress(KeyError, TypeError, ValueError, AttributeError):
        emu.event_happened(event, payload)


def test_the_events_job_survives_hostile_payloads(github, settings) -> None:
    """Through the events worker's job against the emulator: an outcome for every payload, never a raise."""
    @settings_for_job
    @given(mutated())
    def check(case: tuple[str, Any]) -> None:
        event, payload = case
        happened(github[0], event, payload)
        outcome = asyncio.run(handle_event(settings, event, "hostile", payload, lambda message: None))
        assert isinstance(outcome, str)

    check()


settings_for_job = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def test_a_payload_that_is_not_an_object_is_ignored() -> None:
    assert isinstance(plan("issue_comment", "d", [1, 2]), Ignore)  # type: ignore[arg-type]
    payload = comment_event("/retrain ci", repo=REPO, installation_id=INSTALLATION_ID)
    payload["repository"]["full_name"] = "../../etc/passwd"
    assert plan("issue_comment", "d", payload) == Ignore("malformed issue_comment payload: bad repository name")
    payload = comment_event("/retrain ci", repo=REPO, installation_id=INSTALLATION_ID)
    payload["installation"]["id"] = "42; DROP TABLE"
    assert isinstance(plan("issue_comment", "d", payload), Ignore)
