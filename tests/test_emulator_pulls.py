"""The emulator's pull requests against GitHub's description: the answer's shape, the permission it takes,
a fork's head readable in the base repository, a same-repository head following its branch."""

from __future__ import annotations

from tests.emulator.harness import INSTALLATION, Env, app_jwt
from tests.emulator.harness import env as env  # the module-scoped emulator fixture

REPO = "octo/demo"


def test_a_pull_request_reads_as_github_answers_it(env: Env) -> None:
    env.emu.commit_files(REPO, {"data/c.md": b"gamma\n"}, branch="topic")
    number = env.emu.open_pull(REPO, "topic")
    path = f"/repos/{REPO}/pulls/{number}"
    reply = env.call("GET", path)
    assert reply.status == 200
    env.conforms("GET", path, reply)
    pull = reply.json()
    assert (pull["head"]["ref"], pull["head"]["sha"]) == ("topic", env.emu.head(REPO, "topic"))
    assert pull["head"]["repo"]["full_name"] == REPO and pull["base"]["ref"] == "main"
    # the head follows the branch
    moved = env.emu.commit_files(REPO, {"data/d.md": b"delta\n"}, branch="topic")
    assert env.call("GET", path).json()["head"]["sha"] == moved
    assert env.call("GET", f"/repos/{REPO}/pulls/99999").status == 404


def test_a_fork_head_is_readable_in_the_base_repository(env: Env) -> None:
    number = env.emu.open_fork_pull(REPO, "mallory", {"data/evil.md": b"fork text\n"})
    pull = env.call("GET", f"/repos/{REPO}/pulls/{number}").json()
    assert pull["head"]["repo"]["full_name"] == "mallory/demo" and pull["head"]["repo"]["fork"] is True
    sha = pull["head"]["sha"]
    raw = env.call("GET", f"/repos/{REPO}/contents/data/evil.md?ref={sha}", accept="application/vnd.github.raw")
    assert raw.status == 200 and raw.body == b"fork text\n"
    assert env.emu.read_file(REPO, "data/evil.md") is None  # nothing of it on any branch
    assert not any("fork" in b for b in env.emu.repos[REPO].git._out("branch", "--list").split())


def test_reading_a_pull_request_takes_the_pull_requests_permission(env: Env) -> None:
    env.emu.commit_files(REPO, {"data/e.md": b"eps\n"}, branch="topic2")
    number = env.emu.open_pull(REPO, "topic2")
    granted = dict(env.emu.installations[INSTALLATION].permissions)
    try:
        env.emu.set_installation_permissions(INSTALLATION, {k: v for k, v in granted.items() if k != "pull_requests"})
        token = env.call("POST", f"/app/installations/{INSTALLATION}/access_tokens", {},
                         auth=f"Bearer {app_jwt()}")
        assert token.status == 201
        denied = env.call("GET", f"/repos/{REPO}/pulls/{number}", auth=f"token {token.json()['token']}")
        assert denied.status == 403
    finally:
        env.emu.set_installation_permissions(INSTALLATION, granted)
