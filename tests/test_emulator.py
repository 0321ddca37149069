"""The GitHub emulator answers like api.github.com: auth rules, shapes, git effects, error shapes.

Response shapes are validated against GitHub's OpenAPI description, and documents against its GraphQL
schema, when RETRAIN_FIXTURES points at the shared fixtures; otherwise those checks are reported as
not run (a fresh clone has no fixtures).
"""

from __future__ import annotations

import asyncio
import base64
import io
import subprocess
import tarfile
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from gidgethub import QueryError
from gidgethub.aiohttp import GitHubAPI
from gidgethub.apps import get_installation_access_token
from graphql import GraphQLInterfaceType, GraphQLObjectType, specified_scalar_types

from tests.emulator import GitHubEmulator, RecordedCall
from tests.emulator.client import http
from tests.emulator.graphql_schema import load_schema
from tests.emulator.harness import APP_ID, INSTALLATION, KEY, NOT_RUN, OPENAPI, OTHER_KEY, REAL, SCHEMA, Env, app_jwt
from tests.emulator.harness import env as env  # the module-scoped emulator fixture
from tests.emulator.openapi import EMBEDDED, load_spec

HEAD_QUERY = """query($owner: String!, $name: String!, $qualifiedName: String!) {
  repository(owner: $owner, name: $name) {
    defaultBranchRef { name target { oid } }
    ref(qualifiedName: $qualifiedName) { name target { ... on Commit { oid } } } } }"""
COMMIT_MUTATION = """mutation($input: CreateCommitOnBranchInput!) {
  createCommitOnBranch(input: $input) { commit { oid url } } }"""


def test_token_minting_with_a_good_jwt(env: Env) -> None:
    path = f"/app/installations/{INSTALLATION}/access_tokens"
    reply = env.call("POST", path, {"repositories": ["demo"], "permissions": {"contents": "read"}},
                     auth=f"Bearer {app_jwt(iss=int(APP_ID))}")
    assert reply.status == 201
    data = reply.json()
    assert data["token"].startswith("ghs_") and len(data["token"]) == 40
    assert data["expires_at"].endswith("Z") and data["permissions"] == {"contents": "read"}
    env.conforms("POST", path, reply)
    narrowed = f"token {data['token']}"
    assert env.call("GET", "/repos/octo/demo/contents/README.md", auth=narrowed).status == 200
    assert env.call("GET", "/repos/octo/other/contents/README.md", auth=narrowed).status == 404
    assert env.call("POST", "/repos/octo/demo/issues/1/comments", {"body": "x"}, auth=narrowed).status == 403


@pytest.mark.parametrize("bad", [
    pytest.param(lambda: app_jwt(key=OTHER_KEY), id="bad-signature"),
    pytest.param(lambda: app_jwt(iat=-700, exp=-100), id="expired"),
    pytest.param(lambda: app_jwt(iat=0, exp=900), id="longer-than-10-minutes"),
    pytest.param(lambda: app_jwt(iat=300, exp=500), id="issued-in-the-future"),
    pytest.param(lambda: app_jwt(iss="999"), id="other-app"),
    pytest.param(lambda: "not.a.jwt", id="garbage"),
])
def test_bad_app_jwts_are_refused(env: Env, bad: Any) -> None:
    reply = env.call("POST", f"/app/installations/{INSTALLATION}/access_tokens", auth=f"Bearer {bad()}")
    assert reply.status == 401
    assert "claim" in reply.json()["message"] or reply.json()["message"] == "A JSON web token could not be decoded"


def test_unknown_installation_and_installation_token_on_app_endpoint(env: Env) -> None:
    assert env.call("POST", "/app/installations/999/access_tokens", auth=f"Bearer {app_jwt()}").status == 404
    assert env.call("POST", f"/app/installations/{INSTALLATION}/access_tokens").status == 401


def test_repository_calls_need_a_live_token_of_the_right_installation(env: Env) -> None:
    path = "/repos/octo/demo/collaborators/alice/permission"
    assert env.call("GET", path, auth=None).json()["message"] == "Requires authentication"
    assert env.call("GET", path, auth="token ghs_bogus").status == 401
    assert env.call("GET", path, auth=f"Bearer {app_jwt()}").status == 401
    expired = env.emu.tokens.mint(env.emu.installations[INSTALLATION], lifetime_s=-1)
    assert env.call("GET", path, auth=f"token {expired.token}").json()["message"] == "Bad credentials"
    assert env.call("GET", "/repos/elsewhere/private/contents/x").status == 404
    assert env.call("GET", "/repos/octo/missing/contents/x").status == 404


@pytest.mark.parametrize(("role", "permission"), [
    ("admin", "admin"), ("maintain", "write"), ("write", "write"), ("triage", "read"), ("read", "read"),
    (None, "none"),
])
def test_permission_lookup(env: Env, role: str | None, permission: str) -> None:
    login = f"user-{role}"
    if role:
        env.emu.set_permission("octo/demo", login, role)
    else:
        env.emu.add_user(login)  # known to GitHub, no role here
    path = f"/repos/octo/demo/collaborators/{login}/permission"
    reply = env.call("GET", path)
    assert reply.status == 200
    assert reply.json()["permission"] == permission
    assert reply.json()["role_name"] == (role or "none") and reply.json()["user"]["login"] == login
    env.conforms("GET", path, reply)


def test_reactions(env: Env) -> None:
    env.emu.add_comment("octo/demo", 7, comment_id=555)
    path = "/repos/octo/demo/issues/comments/555/reactions"
    reply = env.call("POST", path, {"content": "eyes"})
    assert reply.status == 201 and reply.json()["content"] == "eyes"
    assert reply.json()["user"]["login"] == "retrain[bot]"
    env.conforms("POST", path, reply)
    assert env.call("POST", path, {"content": "eyes"}).status == 200  # same reaction again
    for content in ("rocket", "-1"):  # what the App leaves on success and on refusal
        reply = env.call("POST", path, {"content": content})
        assert reply.status == 201 and reply.json()["content"] == content
        env.conforms("POST", path, reply)
    assert env.emu.reactions("octo/demo", 555) == ["eyes", "rocket", "-1"]
    before = len(env.emu.violations)
    assert env.call("POST", path, {"content": "thumbsup"}).status == 422
    assert env.call("POST", path, {"content": 5}).status == 422
    assert env.call("POST", path).status == 422
    assert len(env.emu.violations) == before + 3
    del env.emu.violations[before:]


def test_comments(env: Env) -> None:
    env.emu.open_issue("octo/demo", 7)
    path = "/repos/octo/demo/issues/7/comments"
    reply = env.call("POST", path, {"body": "Started training."})
    assert reply.status == 201
    comment = reply.json()
    assert comment["body"] == "Started training." and comment["user"] == {**comment["user"], "type": "Bot"}
    assert "#issuecomment-" in comment["html_url"]
    env.conforms("POST", path, reply)
    assert env.emu.comments("octo/demo", 7) == [comment]
    before = len(env.emu.violations)
    assert env.call("POST", path, {"text": "no body"}).status == 422
    del env.emu.violations[before:]


def test_contents(env: Env) -> None:
    raw = env.call("GET", "/repos/octo/demo/contents/data/a.md", accept="application/vnd.github.raw+json")
    assert raw.status == 200 and raw.body == b"alpha\n"
    assert raw.headers["Content-Type"].startswith("application/vnd.github.raw")
    reply = env.call("GET", "/repos/octo/demo/contents/data/a.md?ref=main")
    data = reply.json()
    assert data["type"] == "file" and data["encoding"] == "base64" and data["path"] == "data/a.md"
    assert base64.b64decode(data["content"]) == b"alpha\n" and data["size"] == 6
    blob_sha = subprocess.run(["git", "hash-object", "--stdin"], input=b"alpha\n", capture_output=True,
                              check=True).stdout.decode().strip()
    assert data["sha"] == blob_sha
    env.conforms("GET", "/repos/octo/demo/contents/data/a.md", reply)
    listing = env.call("GET", "/repos/octo/demo/contents/data")
    assert sorted(e["name"] for e in listing.json()) == ["a.md", "b.md"]
    env.conforms("GET", "/repos/octo/demo/contents/data", listing)
    sha = env.emu.head("octo/demo")
    assert env.call("GET", f"/repos/octo/demo/contents/README.md?ref={sha}",
                    accept="application/vnd.github.raw").body == b"# demo\n"
    env.emu.commit_files("octo/demo", {"data/a.md": b"alpha 2\n"}, branch="contents-test")
    pinned = env.call("GET", f"/repos/octo/demo/contents/data/a.md?ref={sha}")  # a full 40-character sha
    assert pinned.status == 200 and base64.b64decode(pinned.json()["content"]) == b"alpha\n"
    assert pinned.json()["url"].endswith(f"?ref={sha}") and f"/blob/{sha}/data/a.md" in pinned.json()["html_url"]
    env.conforms("GET", "/repos/octo/demo/contents/data/a.md", pinned)
    moved = env.emu.head("octo/demo", "contents-test")
    assert env.call("GET", f"/repos/octo/demo/contents/data/a.md?ref={moved}",
                    accept="application/vnd.github.raw").body == b"alpha 2\n"
    assert env.call("GET", "/repos/octo/demo/contents/nope.md").json()["message"] == "Not Found"
    assert env.call("GET", "/repos/octo/demo/contents/README.md?ref=nope").status == 404


def test_tarball_redirects_to_a_one_time_archive(env: Env) -> None:
    reply = env.call("GET", "/repos/octo/demo/tarball/main")
    assert reply.status == 302
    location = reply.headers["Location"]
    sha = env.emu.head("octo/demo")
    assert location.startswith(f"{env.emu.codeload_url}/octo/demo/legacy.tar.gz/{sha}?token=")
    assert env.emu.codeload_url != env.base  # another host, as codeload.github.com is
    archive = http("GET", location)
    assert archive.status == 200 and archive.headers["Content-Type"] == "application/x-gzip"
    with tarfile.open(fileobj=io.BytesIO(archive.body), mode="r:gz") as tar:
        member = tar.extractfile(f"octo-demo-{sha[:7]}/data/b.md")
        assert member is not None and member.read() == b"beta\n"
    assert http("GET", location).status == 404  # one-time


def test_graphql_head_query(env: Env) -> None:
    out = env.gql(HEAD_QUERY, owner="octo", name="demo", qualifiedName="refs/heads/main")
    head = env.emu.head("octo/demo")
    repo = out["data"]["repository"]
    assert repo["defaultBranchRef"] == {"name": "main", "target": {"oid": head}}
    assert repo["ref"] == {"name": "main", "target": {"oid": head}}
    missing = env.gql(HEAD_QUERY, owner="octo", name="demo", qualifiedName="nope")
    assert missing["data"]["repository"]["ref"] is None
    hidden = env.gql(HEAD_QUERY, owner="elsewhere", name="private", qualifiedName="main")
    assert hidden["data"] == {"repository": None} and hidden["errors"][0]["type"] == "NOT_FOUND"
    assert env.emu.calls[-1].graphql_operation == "query repository"


def _commit_input(expected: str, **changes: Any) -> dict[str, Any]:
    return {"branch": {"repositoryNameWithOwner": "octo/commits", "branchName": "main"},
            "expectedHeadOid": expected, "message": {"headline": "Retrain: session 3", "body": "Loss 1.2"},
            "fileChanges": changes}


def test_create_commit_on_branch_makes_one_real_commit(env: Env) -> None:
    head = env.emu.head("octo/commits")
    additions = [{"path": "progress/meta.json", "contents": base64.b64encode(b'{"it": 3}').decode()}]
    out = env.gql(COMMIT_MUTATION, input=_commit_input(head, additions=additions, deletions=[{"path": "data/b.md"}]))
    assert "errors" not in out, out
    assert env.emu.calls[-1].graphql_operation == "mutation createCommitOnBranch"
    oid = out["data"]["createCommitOnBranch"]["commit"]["oid"]
    git_dir = env.emu.root / "repos/octo/commits.git"
    log = subprocess.run(["git", "--git-dir", str(git_dir), "log", "--format=%H|%P|%an|%s|%b", "main"],
                         capture_output=True, check=True, text=True).stdout.split("\n")
    assert log[0] == f"{oid}|{head}|retrain[bot]|Retrain: session 3|Loss 1.2"
    assert env.emu.read_file("octo/commits", "progress/meta.json") == b'{"it": 3}'
    assert env.emu.read_file("octo/commits", "data/b.md") is None
    assert env.emu.git_log("octo/commits")[0]["parents"] == [head]


def test_stale_expected_head_is_rejected_and_commits_nothing(env: Env) -> None:
    stale = env.emu.head("octo/commits")
    pushed = env.emu.commit_files("octo/commits", {"data/a.md": b"changed elsewhere\n"})
    out = env.gql(COMMIT_MUTATION, input=_commit_input(stale, additions=[{"path": "x", "contents": "eA=="}]))
    assert out["data"] == {"createCommitOnBranch": None}
    [error] = out["errors"]
    assert error["type"] == "STALE_DATA" and error["path"] == ["createCommitOnBranch"]
    assert error["message"] == f'Expected branch to point to "{stale}" but it did not.  Pull and try again.'
    assert error["locations"] == [{"line": 2, "column": 3}]
    assert env.emu.head("octo/commits") == pushed


def test_concurrent_commits_on_one_head_let_exactly_one_win(env: Env) -> None:
    head = env.emu.head("octo/commits")

    async def one(session: aiohttp.ClientSession, i: int) -> dict[str, Any]:
        variables = {"input": _commit_input(head, additions=[{"path": f"race/{i}", "contents": "eA=="}])}
        async with session.post(env.base + "/graphql", json={"query": COMMIT_MUTATION, "variables": variables},
                                headers={"Authorization": f"bearer {env.token}"}) as r:
            return await r.json()

    async def go() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(one(session, i) for i in range(4)))

    results = asyncio.run(go())
    assert sum("errors" not in r for r in results) == 1
    assert all(r["errors"][0]["type"] == "STALE_DATA" for r in results if "errors" in r)
    assert env.emu.git_log("octo/commits")[0]["parents"] == [head]


def test_external_branches_and_tarball_without_ref(env: Env) -> None:
    oid = env.emu.commit_files("octo/demo", {"feature.txt": b"f"}, message="feature", branch="feature/x")
    assert env.emu.git_log("octo/demo", "feature/x")[0]["parents"] == [env.emu.head("octo/demo")]
    out = env.gql(HEAD_QUERY, owner="octo", name="demo", qualifiedName="feature/x")
    assert out["data"]["repository"]["ref"] == {"name": "feature/x", "target": {"oid": oid}}
    assert env.call("GET", "/repos/octo/demo/tarball/feature/x").headers["Location"].count(oid) == 1
    before = len(env.emu.violations)
    assert env.call("GET", "/repos/octo/demo/tarball").status == 302  # GitHub serves it, undocumented
    assert "undocumented" in env.emu.violations[-1]
    del env.emu.violations[before:]


def test_create_commit_errors(env: Env) -> None:
    head = env.emu.head("octo/commits")
    bad = _commit_input(head, additions=[{"path": "x", "contents": "not base64!"}])
    assert "Base64String" in env.gql(COMMIT_MUTATION, input=bad)["errors"][0]["message"]
    missing = {**_commit_input(head), "branch": {"repositoryNameWithOwner": "octo/commits", "branchName": "gone"}}
    assert env.gql(COMMIT_MUTATION, input=missing)["errors"][0]["type"] == "NOT_FOUND"
    ghost = _commit_input(head, deletions=[{"path": "never/there.md"}])
    assert env.gql(COMMIT_MUTATION, input=ghost)["errors"][0]["type"] == "UNPROCESSABLE"
    assert env.emu.head("octo/commits") == head


def test_graphql_documents_are_validated(env: Env) -> None:
    before = len(env.emu.violations)
    out = env.gql("query { repository(owner: \"octo\", name: \"demo\") { nameWithOwner defaultBranch } }")
    assert "data" not in out
    assert out["errors"] == [{
        "path": ["query", "repository", "defaultBranch"],
        "extensions": {"code": "undefinedField", "fieldName": "defaultBranch", "typeName": "Repository"},
        "locations": [{"line": 1, "column": 65}],
        "message": "Field 'defaultBranch' doesn't exist on type 'Repository'"}]
    assert env.emu.violations[before:] == ["graphql: Field 'defaultBranch' doesn't exist on type 'Repository'"]
    del env.emu.violations[before:]
    no_auth = http("POST", env.base + "/graphql", body={"query": "{ __typename }"})
    assert no_auth.status == 401


def test_rest_calls_outside_the_description_are_404_and_violations(env: Env) -> None:
    before = len(env.emu.violations)
    reply = env.call("GET", "/repos/octo/demo/no-such-thing")
    assert reply.status == 404 and reply.json()["message"] == "Not Found"
    assert env.call("GET", "/repos/octo/demo/issues/1").status == 404  # documented, not emulated
    assert len(env.emu.violations) == before + 2
    del env.emu.violations[before:]


def test_calls_are_recorded(env: Env) -> None:
    env.emu.open_issue("octo/demo", 9)
    env.call("POST", "/repos/octo/demo/issues/9/comments?x=1", {"body": "hi"})
    assert env.emu.calls[-1] == RecordedCall("POST", "/repos/octo/demo/issues/9/comments", {"x": "1"},
                                             {"body": "hi"}, 201, None, api_version="2022-11-28")


def test_gidgethub_talks_to_the_emulator(env: Env) -> None:
    async def go() -> None:
        async with aiohttp.ClientSession() as session:
            app = GitHubAPI(session, "retrain-tests", base_url=env.base)
            minted = await get_installation_access_token(app, installation_id=str(INSTALLATION), app_id=APP_ID,
                                                         private_key=KEY.private_pem.decode())
            gh = GitHubAPI(session, "retrain-tests", oauth_token=minted["token"], base_url=env.base)
            env.emu.add_user("nobody")
            perm = await gh.getitem("/repos/{owner}/{repo}/collaborators/{user}/permission",
                                    {"owner": "octo", "repo": "demo", "user": "nobody"})
            assert perm["permission"] == "none"
            data = await gh.graphql(HEAD_QUERY, endpoint=env.base + "/graphql", owner="octo", name="other",
                                    qualifiedName="main")
            stale = data["repository"]["defaultBranchRef"]["target"]["oid"]
            env.emu.commit_files("octo/other", {"n": b"1"})
            with pytest.raises(QueryError, match="Expected branch to point to"):
                await gh.graphql(COMMIT_MUTATION, endpoint=env.base + "/graphql", input={
                    **_commit_input(stale), "branch": {"repositoryNameWithOwner": "octo/other", "branchName": "main"}})

    asyncio.run(go())


def test_start_and_stop_in_the_current_loop(tmp_path: Path) -> None:
    emu = GitHubEmulator(app_id=APP_ID, app_public_key_pem=KEY.public_pem, root=tmp_path)
    emu.add_repository("solo/repo", {"a": b"b"}, installation_id=5)
    token = emu.tokens.mint(emu.installations[5]).token

    async def go() -> list[int]:
        base = await emu.start()
        statuses = []
        async with aiohttp.ClientSession() as session:
            for when in ("before", "after"):
                if when == "after":
                    emu.expire_tokens()
                async with session.get(f"{base}/repos/solo/repo/contents/a",
                                       headers={"Authorization": f"token {token}"}) as r:
                    statuses.append(r.status)
            async with session.get(base + "/nope") as r:
                statuses.append(r.status)
        await emu.stop()
        return statuses

    assert asyncio.run(go()) == [200, 401, 404]
    assert len(emu.violations) == 1 and [c.status for c in emu.calls] == [200, 401, 404]


def test_embedded_graphql_subset_matches_github_schema() -> None:
    if not REAL:
        warnings.warn(NOT_RUN, stacklevel=1)
        pytest.skip(NOT_RUN)
    sub, real = load_schema(None), load_schema(SCHEMA)
    for name, typ in sub.type_map.items():
        if name.startswith("__") or name in specified_scalar_types:
            continue
        other = real.type_map.get(name)
        assert type(other) is type(typ), name
        if isinstance(typ, GraphQLObjectType | GraphQLInterfaceType):
            assert isinstance(other, GraphQLObjectType | GraphQLInterfaceType)
            assert {i.name for i in typ.interfaces} <= {i.name for i in other.interfaces}, name
        for fname, fld in getattr(typ, "fields", {}).items():
            theirs = other.fields.get(fname)  # type: ignore[union-attr]
            assert theirs is not None and str(theirs.type) == str(fld.type), f"{name}.{fname}"
            for arg, spec in getattr(fld, "args", {}).items():
                assert str(theirs.args[arg].type) == str(spec.type), f"{name}.{fname}({arg})"


def test_embedded_openapi_matches_github_description() -> None:
    if not REAL:
        warnings.warn(NOT_RUN, stacklevel=1)
        pytest.skip(NOT_RUN)
    real, mine = load_spec(OPENAPI), load_spec(None)
    for template, methods in EMBEDDED["paths"].items():
        for method, op in methods.items():
            theirs = real.match(method, template.replace("{", "").replace("}", ""))
            assert theirs is not None and theirs.template == template
            assert op["externalDocs"] == {"url": theirs.spec["externalDocs"]["url"]}, template
            if "parameters" in op:  # the query parameters a handler reads, as GitHub documents them
                their_query = {p["name"] for p in map(real._deref, theirs.spec["parameters"]) if p["in"] == "query"}
                assert {p["name"] for p in op["parameters"]} == their_query, template
            if "requestBody" in op:
                ours_body = mine._deref(mine.doc["paths"][template][method]["requestBody"])
                their_body = real._deref(theirs.spec["requestBody"])
                assert ours_body["required"] == their_body["required"]
                ours_s = ours_body["content"]["application/json"]["schema"]
                their_s = their_body["content"]["application/json"]["schema"]
                assert set(ours_s["properties"]) == set(their_s["properties"]), template
                assert ours_s.get("required") == their_s.get("required"), template
                for prop, sch in ours_s["properties"].items():
                    assert sch.get("enum") == their_s["properties"][prop].get("enum"), f"{template} {prop}"
