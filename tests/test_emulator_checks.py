"""Check runs in the GitHub emulator: lifecycle, GitHub's validation and wording, permissions."""

from __future__ import annotations

from typing import Any

from tests.emulator.harness import INSTALLATION, Env
from tests.emulator.harness import env as env  # the module-scoped emulator fixture

RUNS = "/repos/octo/demo/check-runs"
CONCLUSIONS = '["success", "failure", "neutral", "cancelled", "timed_out", "action_required", "skipped"]'


def _create(env: Env, **fields: Any) -> dict[str, Any]:
    reply = env.call("POST", RUNS, {"name": "retrain", "head_sha": env.emu.head("octo/demo"), **fields})
    assert reply.status == 201, reply.body
    env.conforms("POST", RUNS, reply)
    return reply.json()


def test_create_update_complete_lifecycle(env: Env) -> None:
    head = env.emu.head("octo/demo")
    create = {"name": "retrain", "head_sha": head, "status": "queued", "external_id": "session-7",
              "details_url": "https://retrain.example/sessions/7",
              "output": {"title": "Queued", "summary": "Waiting for a worker"}}
    reply = env.call("POST", RUNS, create)
    assert reply.status == 201
    env.conforms("POST", RUNS, reply)
    run = reply.json()
    path = f"{RUNS}/{run['id']}"
    assert run["head_sha"] == head and run["status"] == "queued" and run["conclusion"] is None
    assert run["started_at"].endswith("Z") and run["completed_at"] is None
    assert run["external_id"] == "session-7" and run["details_url"] == "https://retrain.example/sessions/7"
    assert run["output"] == {"title": "Queued", "summary": "Waiting for a worker", "text": None,
                             "annotations_count": 0, "annotations_url": f"{env.base}{path}/annotations"}
    assert run["url"] == env.base + path and run["html_url"] == f"https://github.com/octo/demo/runs/{run['id']}"
    assert run["app"]["slug"] == "retrain" and run["pull_requests"] == []

    progress = {"status": "in_progress",
                "output": {"title": "Training", "summary": "iteration 10/100", "text": "loss 2.31"}}
    reply = env.call("PATCH", path, progress)
    assert reply.status == 200 and reply.json()["status"] == "in_progress"
    env.conforms("PATCH", path, reply)
    note = {"path": "README.md", "start_line": 1, "end_line": 1, "annotation_level": "notice", "message": "hi"}
    more = {"output": {"title": "Training", "summary": "iteration 50/100", "annotations": [note]}}
    reply = env.call("PATCH", path, more)
    # GitHub replaces text with what is sent (none: null) and appends annotations
    assert reply.json()["output"] == {**run["output"], "title": "Training", "summary": "iteration 50/100",
                                      "text": None, "annotations_count": 1}
    done = {"conclusion": "success", "output": {"title": "Done", "summary": "Loss 1.20 after 100 iterations"}}
    reply = env.call("PATCH", path, done)
    assert reply.status == 200
    env.conforms("PATCH", path, reply)
    final = reply.json()
    assert final["status"] == "completed" and final["conclusion"] == "success"  # a conclusion completes it
    assert final["completed_at"].endswith("Z") and final["check_suite"] == run["check_suite"]

    got = env.call("GET", path)
    assert got.status == 200 and got.json() == final
    env.conforms("GET", path, got)
    assert [r for r in env.emu.check_runs("octo/demo") if r["id"] == run["id"]] == [final]
    assert env.emu.check_run_history("octo/demo", run["id"]) == [create, progress, more, done]


def test_a_conclusion_on_create_completes_and_refs_resolve(env: Env) -> None:
    run = _create(env, head_sha="main", conclusion="neutral", completed_at="2020-01-02T03:04:05+01:00")
    assert run["head_sha"] == env.emu.head("octo/demo") and run["status"] == "completed"
    assert run["completed_at"] == "2020-01-02T02:04:05Z"
    again = _create(env)
    assert again["check_suite"] == run["check_suite"]  # one suite per head sha for the App
    assert [r["id"] for r in env.emu.check_runs("octo/demo")][-2:] == [run["id"], again["id"]]


def test_refused_bodies_answer_like_github_and_change_nothing(env: Env) -> None:
    before_violations = len(env.emu.violations)
    run = _create(env, status="in_progress")
    path = f"{RUNS}/{run['id']}"
    missing = env.call("POST", RUNS, {"name": "x", "head_sha": "0" * 40})
    assert missing.status == 422 and missing.json() == {
        "message": f"No commit found for SHA: {'0' * 40}",
        "documentation_url": "https://docs.github.com/rest/reference/checks#create-a-check-run",
        "status": "422"}
    completed = env.call("POST", RUNS, {"name": "x", "head_sha": run["head_sha"], "status": "completed"})
    assert completed.status == 422 and completed.json()["message"] == "Validation Failed"
    assert completed.json()["errors"] == [{"resource": "CheckRun", "code": "missing_field", "field": "conclusion"}]
    stale = env.call("PATCH", path, {"conclusion": "stale"})
    assert stale.status == 422
    assert stale.json()["message"] == f"Invalid request.\n\nstale is not a member of {CONCLUSIONS}."
    no_conclusion = env.call("PATCH", path, {"status": "completed"})
    assert no_conclusion.json()["message"] == ('Invalid request.\n\nNo subschema in "anyOf" matched.\n'
                                               '"conclusion" wasn\'t supplied.\n'
                                               'completed is not a member of ["queued", "in_progress"].')
    waiting = env.call("PATCH", path, {"status": "waiting"})
    assert waiting.status == 422 and waiting.json()["message"] == (
        'Invalid request.\n\nNo subschema in "anyOf" matched.\n'
        'waiting is not a member of ["queued", "in_progress", "completed"].\n'
        'waiting is not a member of ["completed"].\n"conclusion" wasn\'t supplied.\n'
        'waiting is not a member of ["queued", "in_progress"].')
    assert env.call("PATCH", path, {"completed_at": "2020-01-01T00:00:00Z"}).json()["message"] == "Validation Failed"
    action = {"label": "Retry", "description": "Run the session again", "identifier": "retry"}
    assert env.call("PATCH", path, {"actions": [action] * 4}).status == 422  # at most 3
    assert env.call("PATCH", path, {"actions": [{**action, "label": "x" * 21}]}).status == 422
    assert env.call("PATCH", path, {"output": {"title": "no summary"}}).status == 422
    assert env.call("PATCH", f"{RUNS}/999999999", {"status": "in_progress"}).status == 404
    assert env.call("GET", path).json() == run
    assert env.emu.check_run_history("octo/demo", run["id"]) == [{"name": "retrain", "head_sha": run["head_sha"],
                                                                  "status": "in_progress"}]
    assert len(env.take_violations(before_violations)) == 8  # all but the missing commit
    assert env.call("PATCH", path, {"actions": [action] * 3}).status == 200


def test_check_runs_need_the_checks_permission(env: Env) -> None:
    run = _create(env)
    path = f"{RUNS}/{run['id']}"
    mint = f"/app/installations/{INSTALLATION}/access_tokens"
    read_only = env.app_call("POST", mint, {"permissions": {"checks": "read", "metadata": "read"}}).json()["token"]
    no_checks = env.app_call("POST", mint, {"permissions": {"contents": "write"}}).json()["token"]
    refused = env.call("POST", RUNS, {"name": "x", "head_sha": run["head_sha"]}, auth=f"token {read_only}")
    assert refused.status == 403 and refused.json()["message"] == "Resource not accessible by integration"
    assert env.call("PATCH", path, {"status": "in_progress"}, auth=f"token {read_only}").status == 403
    assert env.call("GET", path, auth=f"token {read_only}").status == 200
    assert env.call("GET", path, auth=f"token {no_checks}").status == 403
    assert env.call("GET", f"/repos/octo/other/check-runs/{run['id']}").status == 404  # another repository's
    assert env.call("GET", path, auth=None).status == 401
