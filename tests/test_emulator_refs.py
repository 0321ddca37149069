"""The emulator's `Repository.refs` and `Commit.file` answer as GitHub's do: a paginated connection that
needs `first` or `last` (at most 100), names relative to the prefix, and a file's Blob whose `text` is null
when binary and cut at 512,000 bytes (`isTruncated`)."""

from __future__ import annotations

import pytest

from app.github.client import BRANCH_FILES_QUERY
from tests.emulator.harness import Env
from tests.emulator.harness import env as env  # the module-scoped emulator fixture

REPO = "octo/branches"
PATH = "progress/metadata.json"
REFS_PAGE = """query($first: Int, $last: Int, $after: String, $before: String) {
  repository(owner: "octo", name: "branches") {
    refs(refPrefix: "refs/heads/", first: $first, last: $last, after: $after, before: $before) {
      totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
      edges { cursor node { name prefix target { oid } } }
    }
  }
}"""
FILE = """query($expression: String!, $path: String!) {
  repository(owner: "octo", name: "branches") {
    ref(qualifiedName: $expression) {
      target { ... on Commit { file(path: $path) { name path type mode size object {
        __typename oid ... on Blob { byteSize isBinary isTruncated text } } } } }
    }
  }
}"""
BRANCHES = ["a", "b", "feature/c", "main", "z"]


@pytest.fixture(scope="module")
def branches(env: Env) -> Env:
    env.emu.add_repository(REPO, {"README.md": b"# branches\n", PATH: b'{"x": 1}\n'}, installation_id=42)
    for name in BRANCHES:
        if name != "main":
            env.emu.create_branch(REPO, name)
    env.emu.commit_files(REPO, {PATH: b"\0binary"}, branch="b")
    env.emu.commit_files(REPO, {PATH: b"[" + b" " * 600_000 + b"]"}, branch="z")
    env.emu.commit_files(REPO, {PATH: None}, branch="a")
    env.emu.commit_files(REPO, {f"{PATH}/inside": b"a folder now"}, branch="feature/c")
    return env


def page(env: Env, **variables: object) -> dict:
    out = env.gql(REFS_PAGE, **variables)
    assert "errors" not in out, out
    return out["data"]["repository"]["refs"]


def test_refs_come_in_pages_named_relative_to_the_prefix(branches: Env) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(len(BRANCHES)):
        refs = page(branches, first=2, after=cursor)
        assert refs["totalCount"] == len(BRANCHES)
        assert all(e["node"]["prefix"] == "refs/heads/" for e in refs["edges"])
        assert all(e["node"]["target"]["oid"] == branches.emu.head(REPO, e["node"]["name"]) for e in refs["edges"])
        seen += [e["node"]["name"] for e in refs["edges"]]
        assert refs["pageInfo"]["endCursor"] == refs["edges"][-1]["cursor"]
        cursor = refs["pageInfo"]["endCursor"]
        if not refs["pageInfo"]["hasNextPage"]:
            break
    assert seen == BRANCHES
    last = page(branches, last=2, before=page(branches, first=4)["pageInfo"]["endCursor"])
    assert [e["node"]["name"] for e in last["edges"]] == ["b", "feature/c"]
    assert last["pageInfo"]["hasPreviousPage"] and last["pageInfo"]["hasNextPage"]
    everything = page(branches, last=100)
    assert [e["node"]["name"] for e in everything["edges"]] == BRANCHES
    assert not everything["pageInfo"]["hasPreviousPage"] and not everything["pageInfo"]["hasNextPage"]


@pytest.mark.parametrize(("variables", "error_type"), [
    ({}, "MISSING_PAGINATION_BOUNDARIES"),
    ({"first": 101}, "EXCESSIVE_PAGINATION"),
    ({"first": 2, "after": "not a cursor"}, "INVALID_CURSOR_ARGUMENTS"),
])
def test_refs_refuse_what_github_refuses(branches: Env, variables: dict, error_type: str) -> None:
    out = branches.gql(REFS_PAGE, **variables)
    assert out["data"]["repository"]["refs"] is None
    [error] = out["errors"]
    assert error["type"] == error_type and error["path"] == ["repository", "refs"]


def file_at(env: Env, branch: str) -> dict | None:
    out = env.gql(FILE, expression=f"refs/heads/{branch}", path=PATH)
    assert "errors" not in out, out
    return out["data"]["repository"]["ref"]["target"]["file"]


def test_commit_file_gives_the_blob_its_text_null_when_binary_and_cut_when_long(branches: Env) -> None:
    text = file_at(branches, "main")
    assert text is not None and (text["name"], text["path"], text["type"], text["mode"]) == (
        "metadata.json", PATH, "blob", 0o100644)
    assert text["object"]["__typename"] == "Blob"
    assert (text["object"]["text"], text["object"]["isBinary"], text["object"]["isTruncated"]) == (
        '{"x": 1}\n', False, False)
    binary = file_at(branches, "b")["object"]
    assert (binary["text"], binary["isBinary"], binary["byteSize"]) == (None, True, 7)
    long = file_at(branches, "z")["object"]
    assert long["isTruncated"] and len(long["text"]) == 512_000 and long["byteSize"] == 600_002
    assert file_at(branches, "a") is None
    folder = file_at(branches, "feature/c")
    assert folder["type"] == "tree" and folder["object"]["__typename"] == "Tree"


def test_the_apps_branch_files_query_is_answered(branches: Env) -> None:
    out = branches.gql(BRANCH_FILES_QUERY, owner="octo", name="branches", path=PATH, first=100)
    assert "errors" not in out, out
    refs = out["data"]["repository"]["refs"]
    assert refs["pageInfo"] == {"hasNextPage": False, "endCursor": refs["pageInfo"]["endCursor"]}
    files = {n["name"]: n["target"]["file"] for n in refs["nodes"]}
    assert files["a"] is None and files["feature/c"] == {"object": {}}  # a Tree answers no Blob fields
    assert files["main"] == {"object": {"byteSize": 9, "text": '{"x": 1}\n', "isTruncated": False}}
    assert files["b"] == {"object": {"byteSize": 7, "text": None, "isTruncated": False}}
    assert branches.emu.calls[-1].graphql_operation == "query BranchFiles repository"
