"""POST /graphql: execute documents against the schema with resolvers backed by the real git repos.

Error shapes follow api.github.com: everything is HTTP 200, validation errors come without `data`,
resolver errors carry a top-level `type`. The stale-head answer of createCommitOnBranch is

    {"data": {"createCommitOnBranch": null}, "errors": [{"type": "STALE_DATA",
     "path": ["createCommitOnBranch"], "locations": [...],
     "message": "Expected branch to point to \"<expectedHeadOid>\" but it did not.  Pull and try again."}]}

(two spaces before "Pull"). Sources, found with the search tool: a design doc recording a live run
against api.github.com on 2026-10-09 ("Stale expectedHeadOid: HTTP 200, not an HTTP error ...
type STALE_DATA, path [createCommitOnBranch], message 'Expected branch to point to \"<oid>\" but it did
not.  Pull and try again.'"), and a Go test constant "the exact createCommitOnBranch error GitHub
returns on a HEAD conflict" with the same text. Not verified against GitHub: the message for a missing
branch (we send NOT_FOUND "Could not resolve to a Ref with the name 'refs/heads/<b>'.", the wording
GitHub uses for a missing ref elsewhere) and for deleting a missing path (UNPROCESSABLE "A path was
requested for deletion which does not exist as of commit oid `<oid>`", seen only truncated).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from graphql import FieldNode, GraphQLError, GraphQLSchema, OperationDefinitionNode, execute, parse, validate
from graphql.error import GraphQLSyntaxError
from graphql.utilities import get_operation_ast

from .auth import InstallationToken
from .gitstore import Identity, MissingPath, RefMoved
from .graphql_errors import GitHubGraphQLError
from .graphql_history import commit_history
from .graphql_refs import refs_connection, tree_entry
from .graphql_schema import github_validation_error
from .state import HTML, RepoState, node_id


@dataclass
class Context:
    """What resolvers may touch: the caller's token, the visible repositories, the App's identity."""

    token: InstallationToken
    find_repo: Callable[[InstallationToken, str], RepoState | None]
    author: Identity
    committer: Identity
    internal_errors: list[str] = field(default_factory=list)


def _once(load: Callable[[], dict[str, object]]) -> Callable[[], dict[str, object]]:
    """Memoise a loader so the lazy Commit fields share one `git show`."""
    box: list[dict[str, object]] = []

    def get() -> dict[str, object]:
        if not box:
            box.append(load())
        return box[0]

    return get


def _commit(repo: RepoState, oid: str) -> dict[str, Any]:
    """A Commit whose message fields are read from git only when a document asks for them."""
    info = _once(lambda: repo.git.commit_info(oid))

    def message(_info: Any) -> str:
        return str(info()["message"])

    url = f"{HTML}/{repo.full_name}/commit/{oid}"
    return {
        "__typename": "Commit", "oid": oid, "abbreviatedOid": oid[:7], "id": node_id("C", oid),
        "url": url, "commitUrl": url, "commitResourcePath": f"/{repo.full_name}/commit/{oid}",
        "message": message,
        "messageHeadline": lambda i: message(i).split("\n", 1)[0],
        "messageBody": lambda i: message(i).partition("\n")[2].lstrip("\n"),
        "committedDate": lambda _i: info()["committed_date"],
        "repository": lambda _i: _repository(repo),
        "file": lambda _i, path: tree_entry(repo, oid, path, lambda: _repository(repo)),
        "history": lambda _i, **args: commit_history(repo, oid, lambda o: _commit(repo, o), **args),
    }


def _ref(repo: RepoState, qualified: str) -> dict[str, Any] | None:
    """A Ref by qualified or short name (GitHub checks refs/... first, then short names)."""
    short = [f"refs/heads/{qualified}", f"refs/tags/{qualified}"]
    candidates = [qualified] if qualified.startswith("refs/") else short
    for full in candidates:
        oid = repo.git.resolve(full)
        if oid and full.count("/") >= 2:
            return _ref_object(repo, full, oid)
    return None


def _ref_object(repo: RepoState, full: str, oid: str, prefix: str | None = None) -> dict[str, Any]:
    """The Ref `full` pointing at the commit `oid`, named relative to `prefix` (default refs/<kind>/)."""
    prefix = prefix or "/".join(full.split("/", 2)[:2]) + "/"
    return {"__typename": "Ref", "id": node_id("REF", f"{repo.full_name}:{full}"), "name": full.removeprefix(prefix),
            "prefix": prefix, "target": _commit(repo, oid), "repository": lambda _i: _repository(repo)}


def _repository(repo: RepoState) -> dict[str, Any]:
    return {
        "__typename": "Repository", "id": node_id("R", repo.full_name), "name": repo.full_name.split("/")[1],
        "nameWithOwner": repo.full_name, "url": f"{HTML}/{repo.full_name}",
        "defaultBranchRef": lambda _i: _ref(repo, f"refs/heads/{repo.default_branch}"),
        "ref": lambda _i, qualifiedName: _ref(repo, qualifiedName),
        "refs": lambda _i, **args: refs_connection(
            repo, lambda prefix, full, oid: _ref_object(repo, full, oid, prefix), **args),
    }


class Root:
    """Root value: graphql-core's default resolver calls these methods with the field's arguments."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def _visible(self, full_name: str) -> RepoState:
        repo = self.ctx.find_repo(self.ctx.token, full_name)
        if repo is None:
            raise GitHubGraphQLError("NOT_FOUND", f"Could not resolve to a Repository with the name '{full_name}'.")
        return repo

    def repository(self, _info: Any, owner: str, name: str, followRenames: bool = True) -> dict[str, Any]:
        return _repository(self._visible(f"{owner}/{name}"))

    def createCommitOnBranch(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        branch_in = input["branch"]
        full_name, branch = branch_in.get("repositoryNameWithOwner"), branch_in.get("branchName")
        if branch_in.get("id"):
            full_name, qualified = _decode_ref_id(branch_in["id"])
            branch = qualified.removeprefix("refs/heads/")
        if not full_name or not branch:
            raise GitHubGraphQLError("UNPROCESSABLE", "A branch must be identified by `id` or by "
                                     "`repositoryNameWithOwner` and `branchName`.")
        repo = self._visible(full_name)
        if not self.ctx.token.allows("contents", "write"):
            raise GitHubGraphQLError("FORBIDDEN", "Resource not accessible by integration")
        head = repo.git.branch_head(branch)
        if head is None:
            raise GitHubGraphQLError("NOT_FOUND", f"Could not resolve to a Ref with the name 'refs/heads/{branch}'.")
        expected = input["expectedHeadOid"]
        changes = _file_changes(input.get("fileChanges") or {})
        message = input["message"]["headline"]
        if input["message"].get("body"):
            message += "\n\n" + input["message"]["body"]
        try:
            oid = repo.git.commit(branch, changes, message, author=self.ctx.author,
                                  committer=self.ctx.committer, expected_head=expected)
        except RefMoved as exc:
            raise GitHubGraphQLError(
                "STALE_DATA", f'Expected branch to point to "{expected}" but it did not.  Pull and try again.'
            ) from exc
        except MissingPath as exc:
            raise GitHubGraphQLError(
                "UNPROCESSABLE", f"A path was requested for deletion which does not exist as of commit oid "
                f"`{head}`: {exc.path}") from exc
        return {"clientMutationId": input.get("clientMutationId"), "commit": _commit(repo, oid),
                "ref": _ref(repo, f"refs/heads/{branch}")}


def _decode_ref_id(ref_id: str) -> tuple[str, str]:
    """(full name, qualified ref) from a Ref id this emulator handed out."""
    kind, _, payload = ref_id.partition("_")
    try:
        text = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        text = ""
    if kind != "REF" or ":" not in text:
        raise GitHubGraphQLError("NOT_FOUND", f"Could not resolve to a node with the global id of '{ref_id}'")
    full_name, _, qualified = text.partition(":")
    return full_name, qualified


def _valid_path(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and all(p not in ("", ".", "..", ".git") for p in parts) and "\0" not in path


def _file_changes(file_changes: dict[str, Any]) -> dict[str, bytes | None]:
    """Deletions first, then additions, so a path in both ends up added."""
    changes: dict[str, bytes | None] = {}
    for item in file_changes.get("deletions") or []:
        changes[item["path"]] = None
    for item in file_changes.get("additions") or []:
        changes[item["path"]] = base64.b64decode("".join(item["contents"].split()))
    bad = [p for p in changes if not _valid_path(p)]
    if bad:
        raise GitHubGraphQLError("UNPROCESSABLE", f"Invalid path: {bad[0]!r}")
    return changes


def _format(error: GraphQLError, ctx: Context) -> dict[str, Any]:
    original = error.original_error
    out: dict[str, Any] = {}
    if isinstance(original, GitHubGraphQLError):
        out["type"] = original.type
    elif original is not None:
        ctx.internal_errors.append(f"{type(original).__name__}: {original}")
    if error.path:
        out["path"] = list(error.path)
    if error.locations:
        out["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    out["message"] = original.message if isinstance(original, GitHubGraphQLError) else error.message
    if error.extensions:
        out["extensions"] = error.extensions
    return out


def run_graphql(schema: GraphQLSchema, body: Any, ctx: Context) -> tuple[dict[str, Any], str | None, list[str]]:
    """Execute one request body; return (response JSON, operation label, document problems)."""
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        return {"errors": [{"message": "A query attribute must be specified and must be a string."}]}, None, []
    try:
        doc = parse(body["query"])
    except GraphQLSyntaxError as exc:
        err = {"message": exc.message, "locations": [{"line": loc.line, "column": loc.column}
                                                       for loc in exc.locations or []]}
        return {"errors": [err]}, None, [f"graphql parse error: {exc.message}"]
    operation_name = body.get("operationName") or None
    op = get_operation_ast(doc, operation_name)
    label = _operation_label(op)
    problems = validate(schema, doc)
    if problems:
        errors = [github_validation_error(doc, e) for e in problems]
        return {"errors": errors}, label, [f"graphql: {e['message']}" for e in errors]
    variables = body.get("variables") or {}
    if not isinstance(variables, dict):
        return {"errors": [{"message": "Variables are invalid JSON."}]}, label, ["graphql: variables not an object"]
    result = execute(schema, doc, root_value=Root(ctx), variable_values=variables, operation_name=operation_name)
    out: dict[str, Any] = {}
    if result.data is not None:
        out["data"] = result.data
    if result.errors:
        out["errors"] = [_format(e, ctx) for e in result.errors]
    return out, label, [f"graphql internal error: {e}" for e in ctx.internal_errors]


def _operation_label(op: OperationDefinitionNode | None) -> str | None:
    """E.g. "mutation createCommitOnBranch" or "query GetHead repository": type, name, root fields."""
    if op is None:
        return None
    roots = [sel.name.value for sel in op.selection_set.selections if isinstance(sel, FieldNode)]
    return " ".join([op.operation.value, *([op.name.value] if op.name else []), ",".join(roots)]).strip()
