"""The Git Data API in the GitHub emulator: blobs -> tree -> commit -> PATCH ref make a real commit;
a non-fast-forward update is refused as GitHub refuses it; errors carry GitHub's wording."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from typing import Any

import aiohttp

from tests.emulator.harness import INSTALLATION, Env
from tests.emulator.harness import env as env  # the module-scoped emulator fixture

GIT = "/repos/octo/demo/git"
REF_DOCS = "https://docs.github.com/rest/git/refs#update-a-reference"


def _git(env: Env, repo: str, *args: str) -> str:
    git_dir = env.emu.root / "repos" / f"{repo}.git"
    return subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True, check=True,
                          text=True).stdout


def _post(env: Env, path: str, body: Any, status: int = 201) -> dict[str, Any]:
    reply = env.call("POST", path, body)
    assert reply.status == status, reply.body
    env.conforms("POST", path, reply)
    return reply.json()


def test_blobs_tree_commit_and_ref_make_one_real_commit(env: Env) -> None:
    head = env.emu.head("octo/demo")
    ref = env.call("GET", f"{GIT}/ref/heads/main")
    env.conforms("GET", f"{GIT}/ref/heads/main", ref)
    assert ref.json()["ref"] == "refs/heads/main" and ref.json()["object"]["sha"] == head
    assert ref.json()["object"]["type"] == "commit"
    parent = env.call("GET", f"{GIT}/commits/{head}")
    env.conforms("GET", f"{GIT}/commits/{head}", parent)
    assert parent.json()["parents"] == [] and parent.json()["author"]["name"] == "Octo Pusher"

    weights = bytes(range(256))
    blob = _post(env, f"{GIT}/blobs", {"content": base64.b64encode(weights).decode(), "encoding": "base64"})
    assert blob["sha"] == subprocess.run(["git", "hash-object", "--stdin"], input=weights, capture_output=True,
                                         check=True).stdout.decode().strip()
    meta = _post(env, f"{GIT}/blobs", {"content": '{"iteration": 3}\n'})
    tree = _post(env, f"{GIT}/trees", {"base_tree": parent.json()["tree"]["sha"], "tree": [
        {"path": "progress/meta.json", "mode": "100644", "type": "blob", "sha": meta["sha"]},
        {"path": "progress/state.bin", "mode": "100644", "type": "blob", "sha": blob["sha"]},
        {"path": "notes/new.md", "mode": "100644", "type": "blob", "content": "hello\n"},
        {"path": "data/b.md", "mode": "100644", "type": "blob", "sha": None}]})
    assert {e["path"]: e["type"] for e in tree["tree"]} == {
        "README.md": "blob", "data": "tree", "notes": "tree", "progress": "tree"}
    assert tree["truncated"] is False
    commit = _post(env, f"{GIT}/commits", {"message": "Retrain: session 4\n\nLoss 1.1", "tree": tree["sha"],
                                           "parents": [head]})
    assert commit["author"]["name"] == "retrain[bot]" and commit["committer"]["name"] == "GitHub"
    assert commit["verification"]["verified"] is True and commit["parents"][0]["sha"] == head
    assert env.emu.head("octo/demo") == head  # a commit object alone moves nothing

    moved = env.call("PATCH", f"{GIT}/refs/heads/main", {"sha": commit["sha"], "force": False})
    assert moved.status == 200 and moved.json()["object"]["sha"] == commit["sha"]
    env.conforms("PATCH", f"{GIT}/refs/heads/main", moved)
    assert _git(env, "octo/demo", "log", "--format=%H|%P|%an|%cn|%B", "-1", "main").strip() == (
        f"{commit['sha']}|{head}|retrain[bot]|GitHub|Retrain: session 4\n\nLoss 1.1")
    assert _git(env, "octo/demo", "ls-tree", "-r", "--name-only", "main").split() == [
        "README.md", "data/a.md", "notes/new.md", "progress/meta.json", "progress/state.bin"]
    assert env.emu.read_file("octo/demo", "progress/state.bin") == weights
    assert env.emu.read_file("octo/demo", "progress/meta.json") == b'{"iteration": 3}\n'
    assert env.call("GET", f"{GIT}/commits/{commit['sha']}").json() == commit


def test_non_fast_forward_update_is_refused_and_changes_nothing(env: Env) -> None:
    git = "/repos/octo/other/git"
    head = env.emu.head("octo/other")
    tree = env.call("GET", f"{git}/commits/{head}").json()["tree"]["sha"]
    ours = _post(env, f"{git}/commits", {"message": "ours", "tree": tree, "parents": [head]})
    pushed = env.emu.commit_files("octo/other", {"elsewhere.md": b"moved on\n"})  # someone else moved main
    reply = env.call("PATCH", f"{git}/refs/heads/main", {"sha": ours["sha"], "force": False})
    assert reply.status == 422
    assert reply.json() == {"message": "Update is not a fast forward", "documentation_url": REF_DOCS,
                            "status": "422"}
    env.conforms("PATCH", f"{git}/refs/heads/main", reply)
    assert env.call("PATCH", f"{git}/refs/heads/main", {"sha": ours["sha"]}).status == 422  # force defaults false
    assert env.emu.head("octo/other") == pushed and env.emu.git_log("octo/other")[0]["parents"] == [head]
    forced = env.call("PATCH", f"{git}/refs/heads/main", {"sha": ours["sha"], "force": True})
    assert forced.status == 200 and env.emu.head("octo/other") == ours["sha"]


def test_concurrent_ref_updates_from_one_head_let_exactly_one_win(env: Env) -> None:
    git = "/repos/octo/commits/git"
    head = env.emu.head("octo/commits")
    tree = env.call("GET", f"{git}/commits/{head}").json()["tree"]["sha"]
    children = [_post(env, f"{git}/commits", {"message": f"child {i}", "tree": tree, "parents": [head]})["sha"]
                for i in range(4)]

    async def go() -> list[int]:
        async with aiohttp.ClientSession(headers={"Authorization": f"token {env.token}"}) as session:
            async def one(sha: str) -> int:
                async with session.patch(f"{env.base}{git}/refs/heads/main", json={"sha": sha}) as r:
                    return r.status
            return await asyncio.gather(*(one(sha) for sha in children))

    statuses = asyncio.run(go())
    assert sorted(statuses) == [200, 422, 422, 422]
    assert env.emu.head("octo/commits") == children[statuses.index(200)]


def test_git_data_errors_use_githubs_wording(env: Env) -> None:
    before = len(env.emu.violations)
    head = env.emu.head("octo/demo")
    tree = env.call("GET", f"{GIT}/commits/{head}").json()["tree"]["sha"]
    blob = _post(env, f"{GIT}/blobs", {"content": "x"})["sha"]

    def message(method: str, path: str, body: Any) -> str:
        reply = env.call(method, GIT + path, body)
        assert reply.status == 422, (path, reply.body)
        return reply.json()["message"]

    assert message("POST", "/trees", {"tree": []}) == "Invalid tree info"
    assert message("POST", "/trees", {"base_tree": tree, "tree": [
        {"path": "never/there.md", "mode": "100644", "type": "blob", "sha": None}]}) == "GitRPC::BadObjectState"
    assert message("POST", "/trees", {"base_tree": "f" * 40, "tree": [
        {"path": "a", "mode": "100644", "type": "blob", "content": "a"}]}) == "base_tree is not a valid tree oid"
    assert message("POST", "/trees", {"tree": [{"path": "a", "mode": "100644", "type": "blob", "sha": blob,
                                                "content": "a"}]}).startswith("Must supply either tree.sha or")
    assert message("POST", "/trees", {"tree": [{"path": "a", "mode": "100644", "type": "blob",
                                                "sha": "e" * 40}]}) == f"tree.sha {'e' * 40} is not a valid blob"
    assert message("POST", "/trees", {"tree": [{"path": "a", "mode": "100600", "type": "blob",
                                                "content": "a"}]}) == "Must supply a valid tree.mode"
    assert message("POST", "/commits", {"message": "m", "tree": "e" * 40}) == "Tree SHA does not exist"
    assert message("POST", "/commits", {"message": "m", "tree": blob}) == "Tree SHA is not a tree object"
    assert message("POST", "/commits", {"message": "m", "tree": tree, "parents": ["e" * 40]}) == (
        "Parent SHA does not exist or is not a commit object")
    assert message("PATCH", "/refs/heads/nope", {"sha": head}) == "Reference does not exist"
    assert message("PATCH", "/refs/heads/main", {"sha": "e" * 40}) == "Object does not exist"
    assert message("PATCH", "/refs/heads/main", {"sha": blob}) == "Object is not a commit"
    assert message("PATCH", "/refs/heads/main", {"sha": head[:7]}) == (
        "The sha parameter must be exactly 40 characters and contain only [0-9a-f].")
    assert env.call("GET", f"{GIT}/ref/heads/nope").status == 404
    assert env.call("GET", f"{GIT}/commits/{blob}").status == 404
    assert env.emu.head("octo/demo") == head
    assert len(env.take_violations(before)) == 1  # the bad mode is outside the documented enum


def test_git_data_writes_need_contents_write(env: Env) -> None:
    mint = f"/app/installations/{INSTALLATION}/access_tokens"
    reader = env.app_call("POST", mint, {"permissions": {"contents": "read"}}).json()["token"]
    refused = env.call("POST", f"{GIT}/blobs", {"content": "x"}, auth=f"token {reader}")
    assert refused.status == 403 and refused.json()["message"] == "Resource not accessible by integration"
    head = env.emu.head("octo/demo")
    assert env.call("PATCH", f"{GIT}/refs/heads/main", {"sha": head}, auth=f"token {reader}").status == 403
    assert env.call("GET", f"{GIT}/ref/heads/main", auth=f"token {reader}").status == 200
    assert env.call("GET", "/repos/elsewhere/private/git/ref/heads/main").status == 404


def test_trees_graft_subtrees_delete_directories_and_replace_files(env: Env) -> None:
    git = "/repos/octo/other/git"
    base = env.call("GET", f"{git}/ref/heads/main").json()["object"]["sha"]
    data = _git(env, "octo/other", "rev-parse", f"{base}:data").strip()  # the sha of the directory data/
    tree = _post(env, f"{git}/trees", {"base_tree": base, "tree": [
        {"path": "copy/of/data", "mode": "040000", "type": "tree", "sha": data},
        {"path": "README.md/inside.md", "mode": "100644", "type": "blob", "content": "a file became a directory"},
        {"path": "tool.sh", "mode": "100755", "type": "blob", "content": "#!/bin/sh\n"},
        {"path": "data", "mode": "040000", "type": "tree", "sha": None}]})
    listing = _git(env, "octo/other", "ls-tree", "-r", tree["sha"]).splitlines()
    assert [(row.split()[0], row.split("\t")[1]) for row in listing] == [
        ("100644", "README.md/inside.md"), ("100644", "copy/of/data/a.md"), ("100644", "copy/of/data/b.md"),
        ("100755", "tool.sh")]
    everything = [{"path": p, "mode": "100644", "type": "blob", "sha": None} for p in ("README.md", "data")]
    assert env.call("POST", f"{git}/trees", {"base_tree": base, "tree": everything}).status == 404  # as GitHub


TREES = {"README.md": b"# trees\n", "docs/a.md": b"alpha\n", "docs/deep/b.md": b"beta\n", "tool.sh": b"#!/bin/sh\n"}


def _tree_repo(env: Env) -> tuple[str, str]:
    """A repository of its own (the others are changed by other tests): its git path and head commit."""
    if "octo/trees" not in env.emu.repos:
        env.emu.add_repository("octo/trees", TREES, installation_id=INSTALLATION)
    return "/repos/octo/trees/git", env.emu.head("octo/trees")


def _get(env: Env, path: str, **kw: Any) -> dict[str, Any]:
    reply = env.call("GET", path, **kw)
    assert reply.status == 200, reply.body
    env.conforms("GET", path, reply)
    return reply.json()


def test_a_tree_is_listed_by_commit_tree_or_ref_and_recursively_on_request(env: Env) -> None:
    git, head = _tree_repo(env)
    root = _git(env, "octo/trees", "rev-parse", f"{head}^{{tree}}").strip()
    top = _get(env, f"{git}/trees/{head}")  # a commit sha names its tree, as on GitHub
    assert top["sha"] == root and top["truncated"] is False
    assert [(e["path"], e["type"]) for e in top["tree"]] == [("README.md", "blob"), ("docs", "tree"),
                                                              ("tool.sh", "blob")]
    assert top["tree"][0]["size"] == len(TREES["README.md"]) and "size" not in top["tree"][1]
    assert top["tree"][1]["url"].endswith(f"/repos/octo/trees/git/trees/{top['tree'][1]['sha']}")
    everything = _get(env, f"{git}/trees/{root}?recursive=1")
    assert [e["path"] for e in everything["tree"]] == [  # a sub-tree comes before what it holds
        "README.md", "docs", "docs/a.md", "docs/deep", "docs/deep/b.md", "tool.sh"]
    assert _get(env, f"{git}/trees/main?recursive=false") == everything  # any value means recursive
    docs = _get(env, f"{git}/trees/{top['tree'][1]['sha']}")
    assert [e["path"] for e in docs["tree"]] == ["a.md", "deep"]  # paths relative to the tree listed
    blob = everything["tree"][2]["sha"]
    for missing in ("0" * 40, blob, "no-such-branch"):
        assert env.call("GET", f"{git}/trees/{missing}").status == 404


def test_a_blob_is_raw_bytes_or_base64_json(env: Env) -> None:
    git, head = _tree_repo(env)
    sha = _git(env, "octo/trees", "rev-parse", f"{head}:docs/deep/b.md").strip()
    blob = _get(env, f"{git}/blobs/{sha}")
    assert (blob["sha"], blob["size"], blob["encoding"]) == (sha, len(TREES["docs/deep/b.md"]), "base64")
    assert base64.b64decode(blob["content"]) == TREES["docs/deep/b.md"]
    raw = env.call("GET", f"{git}/blobs/{sha}", accept="application/vnd.github.raw+json")
    assert raw.status == 200 and raw.body == TREES["docs/deep/b.md"]
    tree = _git(env, "octo/trees", "rev-parse", f"{head}:docs").strip()
    for missing in ("0" * 40, tree, head, sha[:12]):
        assert env.call("GET", f"{git}/blobs/{missing}").status == 404


def test_reading_trees_and_blobs_needs_contents_read(env: Env) -> None:
    git, head = _tree_repo(env)
    mint = f"/app/installations/{INSTALLATION}/access_tokens"
    reader = env.app_call("POST", mint, {"permissions": {"contents": "read"}}).json()["token"]
    other = env.app_call("POST", mint, {"permissions": {"checks": "write", "metadata": "read"}}).json()["token"]
    sha = _git(env, "octo/trees", "rev-parse", f"{head}:README.md").strip()
    for path in (f"{git}/trees/{head}?recursive=1", f"{git}/blobs/{sha}"):
        assert env.call("GET", path, auth=f"token {reader}").status == 200
        refused = env.call("GET", path, auth=f"token {other}")
        assert refused.status == 403 and refused.json()["message"] == "Resource not accessible by integration"
    assert env.call("GET", "/repos/elsewhere/private/git/trees/main").status == 404


def test_a_recursive_listing_over_the_limit_is_truncated(env: Env) -> None:
    git, head = _tree_repo(env)
    limits = env.emu.tree_limit_entries, env.emu.tree_limit_bytes
    try:
        env.emu.tree_limit_entries = 4
        cut = _get(env, f"{git}/trees/{head}?recursive=1")
        assert cut["truncated"] is True and [e["path"] for e in cut["tree"]] == [
            "README.md", "docs", "docs/a.md", "docs/deep"]
        assert _get(env, f"{git}/trees/{head}")["truncated"] is False  # the limit is the recursive one's
        env.emu.tree_limit_entries, env.emu.tree_limit_bytes = limits[0], 400
        by_size = _get(env, f"{git}/trees/{head}?recursive=1")
        assert by_size["truncated"] is True and 0 < len(by_size["tree"]) < 6
    finally:
        env.emu.tree_limit_entries, env.emu.tree_limit_bytes = limits
    assert _get(env, f"{git}/trees/{head}?recursive=1")["truncated"] is False
    assert [v for v in env.emu.violations if "/octo/trees/" in v] == []
