"""The hostile-repository suite: what someone who can push to one installed repository can write (its
`.github/retrain.yml`, its `metadata.json`, its file names) and send (a command, a replayed delivery), each
through the real processes its path crosses: the receiver over HTTP, the events and train workers, Redis,
the GitHub emulator, the checkpoint store on disk, and `retrain config check` as its own process.

Each input must get a clear answer (a reply, a check run, the session's notes, or `config check`'s error),
write and delete nothing outside the repository's own store prefix, read nothing outside the store, and
leave the worker serving the next session. One line per input is printed at the end of the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from tests.conftest import INSTALLATION_ID, REPO
from tests.emulator import GitHubEmulator
from tests.payloads import comment_event
from tests.processes import pool_children, wait_until
from tests.repos import TINY_CONFIG
from tests.services import Services, post, retrain_services
from tests.test_schedules import push_event
from workers.coordination.budget import BUDGET_KEY, utc_day
from workers.coordination.losses import LOSSES_KEY
from workers.jobs.events import session_id_for

RUN = "nanecho-cached-ci"
RUN_DIR = f".training-progress/{RUN}"
METADATA = f"{RUN_DIR}/cache/metadata.json"
SESSION_TIMEOUT = 240
ROOT = Path(__file__).resolve().parents[1]

# (what it is, the config text, what the refusal must name)
HOSTILE_CONFIGS: list[tuple[str, str, str]] = [
    ("run_prefix climbing out of the store", "run_prefix: '../../victim/repo/x-'\n", "run_prefix"),
    ("a profile named ../../../etc", "profiles: {'../../../etc': {n_layer: 1}}\n", "../../../etc"),
    ("progress_dir at the file system root", "progress_dir: /etc\n", "progress_dir"),
    ("progress_dir climbing out", "progress_dir: 'a/../../x'\n", "progress_dir"),
    ("a branch name git refuses", "branch: 'main/../x'\n", "branch"),
    ("a workflow outside .github/workflows", "workflows: ['../../x.yml']\n", "workflows"),
    ("n_head that does not divide n_embd", "profiles: {ci: {n_head: 3, n_embd: 256}}\n", "n_head (3) must divide"),
    ("min_lr above learning_rate", "profiles: {ci: {min_lr: 0.1, learning_rate: 0.01}}\n", "min_lr"),
    ("a glob longer than a pattern may be", f"data: {{include: ['{'a' * 300}']}}\n", "data.include"),
    ("65 globs", "data: {include: [" + ", ".join(f"'d{i}/*.md'" for i in range(65)) + "]}\n", "data.include"),
    ("a cron that is not one", "schedule: [{cron: '99 * * * *', profile: ci}]\n", "schedule.0.cron"),
    ("a billion iterations in a profile", "profiles: {ci: {max_iters: 999999999}}\n", "RETRAIN_MAX_ITERS"),
    ("a 77-billion-parameter model", "profiles: {ci: {n_layer: 96, n_head: 64, n_embd: 8192}}\n",
     "RETRAIN_MAX_PARAMS"),
    ("batch_size 4096", "profiles: {ci: {batch_size: 4096}}\n", "RETRAIN_MAX_BATCH_SIZE"),
    ("block_size 32768", "profiles: {ci: {block_size: 32768}}\n", "RETRAIN_MAX_BLOCK_SIZE"),
    ("a config of 100 kB", "# " + "x" * 100_000 + "\n", "at most 65,536"),
    ("progress_dir inside .git", "progress_dir: 'notes/.GIT'\n", "progress_dir"),
    ("progress_dir among the workflows", "progress_dir: .github/workflows/x\n", "progress_dir"),
    ("an infinite learning_rate", "profiles: {ci: {learning_rate: .inf}}\n", "finite number"),
    ("retention of 1e23 checkpoints", "retention: {max_checkpoints: 100000000000000000000000}\n",
     "retention.max_checkpoints"),
    ("2,003 profiles", "profiles: {" + ", ".join(f"p{i}: {{}}" for i in range(2003)) + "}\n", "profiles"),
    ("lists nested 900 deep", "data: {include: " + "[" * 900 + "]" * 900 + "}\n", "data.include"),
    ("YAML aliases nested nine deep", "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True))
     + "data: {include: *h}\n", "data.include"),
]
# Refused only where the App counts them (schedules are applied on push, not by a comment)
SCHEDULE_CONFIGS: list[tuple[str, str, str]] = [
    ("500 schedule entries", "schedule:\n" + "".join(f"  - {{cron: '{i % 60} {i // 60} * * *', profile: ci}}\n"
                                                     for i in range(500)), "RETRAIN_MAX_SCHEDULE_ENTRIES"),
    ("a cron firing every minute", "schedule: [{cron: '* * * * *', profile: ci}]\n",
     "RETRAIN_MIN_SCHEDULE_INTERVAL_S"),
]


@pytest.mark.parametrize(("what", "text", "named"), HOSTILE_CONFIGS + SCHEDULE_CONFIGS,
                         ids=[c[0] for c in HOSTILE_CONFIGS + SCHEDULE_CONFIGS])
def test_config_check_rejects_each_hostile_config(tmp_path: Path, hostile_report, what: str, text: str,
                                                  named: str) -> None:
    path = tmp_path / "retrain.yml"
    path.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAIN_")}  # the default limits
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "app.cli", "config", "check", str(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    took = time.monotonic() - began
    assert done.returncode == 2 and named in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr) < 4000
    hostile_report(f"config check: {what}", f"rejected naming `{named}` in {took:.2f} s (a process start included)")


@pytest.fixture
def services(tmp_path: Path, github, redis_url: str, clean_redis, app_key_pair) -> Iterator[Services]:
    with retrain_services(tmp_path, github[1], redis_url, app_key_pair[0], RETRAIN_LOCK_TTL_S="2",
                          RETRAIN_BUSY_RETRY_S="0.5", RETRAIN_GPU_SECONDS_PER_DAY="1000000",
                          RETRAIN_MAX_SNAPSHOT_BYTES=str(2**20)) as running:
        yield running


class Commenter:
    """Posts `/retrain` comments on an issue of their own and waits for what comes back."""

    def __init__(self, emu: GitHubEmulator, services: Services) -> None:
        self.emu, self.services = emu, services
        self.next_id = 5000

    def post(self, text: str, *, issue: int, comment_id: int | None = None, delivery: str | None = None) -> int:
        self.next_id += 1
        cid = comment_id or self.next_id
        payload = comment_event(text, sender="alice", repo=REPO, installation_id=INSTALLATION_ID, comment_id=cid,
                                issue_number=issue, github=self.emu)
        assert post(self.services.web, payload, delivery=delivery or f"hostile-{cid}") == 202
        return cid

    def reply(self, issue: int) -> str:
        [reply] = wait_until(lambda: self.emu.comments(REPO, issue), 60, f"a reply on issue {issue}",
                             self.services.events_log)
        return reply["body"]


def progress_commits(emu: GitHubEmulator) -> list[dict]:
    return [c for c in emu.git_log(REPO) if c["message"].startswith("retrain(")]


def summary(emu: GitHubEmulator) -> dict:
    return json.loads(emu.read_file(REPO, f"{RUN_DIR}/training_summary.json"))["session"]


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()} if root.exists() else {}


def test_hostile_configs_commands_and_replays_are_answered_and_run_nothing(
    github, services, redis_url: str, hostile_report,
) -> None:
    emu, _ = github
    people = Commenter(emu, services)
    good = emu.read_file(REPO, ".github/retrain.yml")
    checks_before = len(emu.check_runs(REPO))
    for issue, (what, text, named) in enumerate(HOSTILE_CONFIGS, start=100):
        emu.commit_files(REPO, {".github/retrain.yml": text.encode()}, message=f"hostile: {what}")
        people.post("/retrain ci", issue=issue)
        body = people.reply(issue)
        assert named in body and "Traceback" not in body, body
        hostile_report(f"config: {what}", f"a reply naming `{named}`; no session, no check run")
    assert len(emu.check_runs(REPO)) == checks_before and progress_commits(emu) == []

    emu.commit_files(REPO, {".github/retrain.yml": good}, message="back to a good config")
    people.post("/retrain ci max_iters=999999999", issue=200)
    body = people.reply(200)
    assert "RETRAIN_MAX_ITERS" in body and "100,000" in body, body
    hostile_report("command: /retrain ci max_iters=999999999", "refused when enqueued, naming RETRAIN_MAX_ITERS")

    client = redis.Redis.from_url(redis_url)
    day = BUDGET_KEY.format(installation_id=INSTALLATION_ID, day=utc_day())
    client.hset(day, "used", 1_000_000)
    people.post("/retrain ci", issue=201)
    body = people.reply(201)
    assert "RETRAIN_GPU_SECONDS_PER_DAY" in body and "00:00 UTC" in body, body
    client.delete(day)
    hostile_report("a session with the installation's day spent", "refused when enqueued, naming "
                   "RETRAIN_GPU_SECONDS_PER_DAY and when it renews")

    for what, text, named in SCHEDULE_CONFIGS:
        oid = emu.commit_files(REPO, {".github/retrain.yml": good + text.encode()}, message=f"hostile: {what}")
        assert post(services.web, push_event(after=oid), delivery=f"push-{oid}", event="push") == 202
        refused = wait_until(lambda oid=oid: [c for c in emu.check_runs(REPO) if c["head_sha"] == oid], 60,
                             "the schedule's check run", services.events_log)
        assert refused[0]["conclusion"] == "failure" and named in refused[0]["output"]["summary"]
        assert not list(client.scan_iter("retrain:schedule:*")), "an entry was written"
        hostile_report(f"push: {what}", f"a failed check run naming {named}; no schedule entry written")
    emu.commit_files(REPO, {".github/retrain.yml": good}, message="back to a good config")

    # A delivery captured on the way and posted again under a new X-GitHub-Delivery (the header is not
    # signed): the comment names the session, so the replay starts nothing.
    people.post("/retrain ci", issue=300, comment_id=777, delivery="original")
    wait_until(lambda: len(progress_commits(emu)) == 1, SESSION_TIMEOUT, "the session's commit", services.train_log)
    people.post("/retrain ci", issue=300, comment_id=777, delivery="replayed-1")
    people.post("/retrain ci", issue=300, comment_id=777, delivery="replayed-2")
    wait_until(lambda: "a replay does nothing" in services.events_log.read_text(), 60, "the replays' outcome",
               services.events_log)
    time.sleep(1.0)
    replies = emu.comments(REPO, 300)
    assert len(progress_commits(emu)) == 1 and len(replies) == 1, [r["body"][:80] for r in replies]  # queued, edited
    assert summary(emu)["id"] == session_id_for(f"issue_comment:{REPO}:777")
    hostile_report("a signed comment replayed twice under new delivery ids", "one session, one commit; the "
                   "replays were recognised by the comment id and started nothing")


class CountingServer(ThreadingHTTPServer):
    requests: list[str]


class _Count(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"x" * 100)

    def log_message(self, *args: object) -> None:
        pass


def test_a_hostile_registry_and_file_names_cannot_reach_past_the_repositorys_prefix(
    github, services, tmp_path: Path, redis_url: str, hostile_report,
) -> None:
    emu, _ = github
    people = Commenter(emu, services)
    store = tmp_path / "store"
    people.post("/retrain ci", issue=400)
    wait_until(lambda: len(progress_commits(emu)) == 1, SESSION_TIMEOUT, "the first commit", services.train_log)
    first = summary(emu)
    registry = json.loads(emu.read_file(REPO, METADATA))
    mine = registry[first["checkpoint_id"]]

    victim = store / "octo" / "victim" / RUN / "ckpt_theirs.pt"  # another repository's weights, same store
    victim.parent.mkdir(parents=True)
    victim.write_bytes((store / mine["storage"]["key"]).read_bytes())
    secret = tmp_path / "worker-secret"  # a worker's file outside the store
    secret.write_bytes(b"the worker's, not the repository's")
    server = CountingServer(("127.0.0.1", 0), _Count)
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/weights.pt"

    def entry(name: str, storage: dict, val_loss: float | None) -> tuple[str, dict]:
        cid = f"ckpt_20200101_00000{len(name) % 10}_1_{name}"
        return cid, {**mine, "checkpoint_id": cid, "val_loss": val_loss, "storage": {**mine["storage"], **storage}}

    hostile = dict([
        entry("climb", {"key": f"{REPO}/{RUN}/../../victim/{RUN}/ckpt_theirs.pt"}, 0.0001),
        entry("other", {"key": f"octo/victim/{RUN}/ckpt_theirs.pt"}, 0.0002),
        entry("absolute", {"key": "/etc/passwd"}, 0.0003),
        entry("scheme", {"key": "s3://bucket/x.pt"}, 0.0004),
        entry("wipe", {"key": None, "uri": f"file://{secret}"}, None),
        entry("fetch", {"key": None, "uri": url}, 0.00001),
        entry("folder", {"key": f"{REPO}/{RUN}/inflight"}, None),
        entry("glob", {"key": f"{REPO}/{RUN}/*"}, 0.0005),
    ])
    for value in hostile.values():
        if value["storage"].get("key") is None:
            value["storage"].pop("key")
    odd_names = {"notes/--help.md": b"# dashes\n" * 40, "notes/new\nline.md": b"# newline in a name\n" * 40,
                 "notes/\u00fcn\u00efcode \u2713.md": b"# unicode\n" * 40, f"notes/{'x' * 200}.md": b"# long\n" * 40}
    config = TINY_CONFIG.replace('include: ["notes/**/*.md"]',
                                 'include: ["notes/**/*.md", "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b"]')
    emu.commit_files(REPO, {METADATA: json.dumps({**registry, **hostile}).encode(),
                            ".github/retrain.yml": (config + "retention: {max_checkpoints: 2}\n").encode(),
                            f"notes/{'a' * 43}.md": b"# a file the backtracking glob took 42 s over\n" * 20,
                            **odd_names}, message="hostile registry and file names")
    others = store / REPO / RUN / "inflight" / f"{'e' * 32}.pt"  # another session's safety net, in the run
    others.parent.mkdir(parents=True, exist_ok=True)
    others.write_bytes(b"another session's in-session checkpoint")
    before = files_under(store)

    # Two sessions: A trains; B waits for the run, and finds the installation's day spent when it gets it.
    people.post("/retrain ci", issue=401)
    people.post("/retrain ci", issue=402)
    client = redis.Redis.from_url(redis_url)
    wait_until(lambda: client.exists(f"retrain:lock:{REPO}:{RUN}"), SESSION_TIMEOUT, "session A to hold the run",
               services.train_log)
    client.hset(BUDGET_KEY.format(installation_id=INSTALLATION_ID, day=utc_day()), "used", 1_000_000)
    wait_until(lambda: len(progress_commits(emu)) == 2, SESSION_TIMEOUT, "session A's commit", services.train_log)
    a = summary(emu)
    assert a["resumed_from"] == first["checkpoint_id"], a["notes"]  # none of the "better" entries was taken
    notes = "\n".join(a["notes"])
    for name in ("climb", "other", "absolute", "scheme", "fetch", "glob"):
        assert any(name in n and ("outside this run's folder" in n or "not a key" in n) for n in a["notes"]), notes
    assert str(store) not in notes and str(tmp_path) not in json.dumps(emu.read_file(REPO, METADATA).decode())
    assert server.requests == [], server.requests
    assert secret.read_bytes() == b"the worker's, not the repository's" and victim.is_file()
    assert others.read_bytes() == b"another session's in-session checkpoint"  # neither the folder nor `*` went
    assert all(c["conclusion"] != "failure" or "internal error" not in json.dumps(c["output"])
               for c in emu.check_runs(REPO))
    after = files_under(store)
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    assert changed and all(p.startswith(f"{REPO}/{RUN}/") for p in changed), sorted(changed)
    kept = json.loads(emu.read_file(REPO, METADATA))
    trained_on = kept[a["checkpoint_id"]]["data_config"]
    assert set(odd_names) <= set(trained_on["train_files"]) | set(trained_on["val_files"])
    assert not set(hostile) & set(kept)
    for name in ("climb", "other", "absolute", "scheme"):
        hostile_report(f"metadata.json: a `{name}` storage key", "refused with a note (outside this run's folder); "
                       "never read; not deleted by retention")
    hostile_report("metadata.json: a file:// URI to a worker's file, val_loss null (retention bait)",
                   "refused with a note; the file is untouched")
    hostile_report("metadata.json: an http:// URI as the best checkpoint", "refused with a note; no request made")
    hostile_report("metadata.json: a key naming the run's inflight/ folder, val_loss null (retention bait)",
                   "retention deleted no folder; the session reported success; another session's file kept")
    hostile_report("metadata.json: a key `<run>/*` as a good checkpoint (object stores expand globs)",
                   "refused with a note; nothing read or deleted")
    hostile_report("file names with a newline, dashes, unicode, 200 characters", "trained on like any other; the "
                   "summary is valid JSON")
    hostile_report("data.include `*a*a…*b` (42 s of backtracking before) over a 43-character name",
                   "matched in linear time; the session ran")
    hostile_report("store writes of the session", f"{len(changed)} objects changed, all under {REPO}/{RUN}/")

    checks = wait_until(lambda: [c for c in emu.check_runs(REPO) if c["status"] == "completed"
                                 and c["conclusion"] == "failure"], 60, "session B's check run", services.train_log)
    assert "RETRAIN_GPU_SECONDS_PER_DAY" in json.dumps(checks[0]["output"]), checks[0]["output"]
    hostile_report("a queued session whose installation spent its day before it started",
                   "refused when it got its run, in its check run; nothing trained")

    client.delete(BUDGET_KEY.format(installation_id=INSTALLATION_ID, day=utc_day()))
    emu.commit_files(REPO, {"notes/dump.md": b"# a data dump, not notes\n" * 100_000}, message="2.6 MB of text")
    blobs = [c for c in emu.calls if "/git/blobs/" in c.path]
    people.post("/retrain ci", issue=403)
    [body] = wait_until(lambda: [c["body"] for c in emu.comments(REPO, 403) if "narrow data.include" in c["body"]],
                        60, "the over-cap session's report", services.train_log)
    assert "1,048,576 bytes a session reads" in body, body
    assert [c for c in emu.calls if "/git/blobs/" in c.path] == blobs  # nothing downloaded
    hostile_report("training text over RETRAIN_MAX_SNAPSHOT_BYTES (2.6 MB against 1 MiB)",
                   "failed before any download; its check run and reply say how to narrow data.include")

    emu.commit_files(REPO, {"notes/dump.md": None}, message="drop the dump")
    people.post("/retrain ci", issue=404)
    wait_until(lambda: len(progress_commits(emu)) == 3, SESSION_TIMEOUT, "the next session's commit",
               services.train_log)
    hostile_report("the next session after all of the above", "trained and committed as usual")


def test_a_session_that_kills_its_worker_every_time_ends_with_a_report(github, services, redis_url: str,
                                                                       hostile_report) -> None:
    """A poison pill: the pool process is killed (as the kernel's OOM killer would) each time the session
    starts; Celery hands the task back each time; after RETRAIN_MAX_WORKER_LOSSES (3) the session fails."""
    emu, _ = github
    people = Commenter(emu, services)
    client = redis.Redis.from_url(redis_url)
    cid = people.post("/retrain ci max_iters=100000", issue=500)
    starts = LOSSES_KEY.format(session_id=session_id_for(f"issue_comment:{REPO}:{cid}"))
    lock = f"retrain:lock:{REPO}:{RUN}"
    for lost in range(3):  # each start counted and holding the run (its fence is the start's number)
        wait_until(lambda lost=lost: int(client.get(starts) or 0) == lost + 1
                   and (client.get(lock) or b"").startswith(f"{lost + 1}:".encode()), SESSION_TIMEOUT,
                   f"start {lost + 1} to hold the run", services.train_log)
        [child] = pool_children(services.train)
        os.kill(child, signal.SIGKILL)
    failed = wait_until(lambda: [c for c in emu.check_runs(REPO) if c["status"] == "completed"], SESSION_TIMEOUT,
                        "the session's failure", services.train_log)
    assert failed[0]["conclusion"] == "failure" and "lost 3 times" in json.dumps(failed[0]["output"])
    assert progress_commits(emu) == []
    time.sleep(2.0)  # nothing starts it again
    assert int(client.get(starts)) == 3 and services.train.poll() is None
    budget = client.hgetall(BUDGET_KEY.format(installation_id=INSTALLATION_ID, day=utc_day()))
    assert not [k for k in budget if k.startswith(b"held:")], budget  # the lost starts' holds are handed back
    hostile_report("a session whose worker process is killed at every start (OOM)",
                   "failed after 3 losses with a report naming RETRAIN_MAX_WORKER_LOSSES; not sent again")
