"""The Git Data API (blobs, trees, commits, refs) on the real bare repositories, read and written.

Checks and wording follow GitHub's handlers (Api::GitBlobs, Api::GitTrees, Api::GitCommits,
Api::GitRefs, found with the search tool): e.g. PATCH a ref with `force: false` to a commit that does not
descend from it is 422 "Update is not a fast forward"; a missing ref is 422 "Reference does not exist";
a missing object "Object does not exist"; a tree with no entries "Invalid tree info"; deleting a path
that is not there "GitRPC::BadObjectState"; a commit on a missing tree "Tree SHA does not exist".
A commit created by the App with neither author nor committer is authored by the App's bot and
committed (and signed) by GitHub, like createCommitOnBranch's; the ref moves by compare-and-swap.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .gitstore import Identity, RawCommit, TreeEntry
from .gittree import BadObjectState, TreeChange, build_tree
from .openapi import Operation
from .rest import Handler, fail, installation_token, not_found, read_json, visible_repo, wants_raw
from .state import GITHUB_COMMITTER, HTML, RepoState, node_id, now_iso

if TYPE_CHECKING:
    from .emulator import GitHubEmulator

FULL_OID = re.compile(r"^[0-9a-f]{40}$")
TREE_MODES = ("100644", "100755", "040000", "160000", "120000")
_MODE_KIND = {"040000": "tree", "160000": "commit"}
_BAD_SEGMENTS = {"", ".", "..", ".git"}


def _run(fn: Any, *args: Any) -> Any:
    return asyncio.to_thread(fn, *args)


def _git_url(emu: GitHubEmulator, repo: RepoState, kind: str, oid: str) -> str:
    return f"{emu.base_url}/repos/{repo.full_name}/git/{kind}/{oid}"


def commit_json(emu: GitHubEmulator, repo: RepoState, raw: RawCommit) -> dict[str, Any]:
    """A `git-commit` object; commits GitHub committed itself read as verified (no real signature)."""
    signed_by_github = (raw.committer.name, raw.committer.email) == (GITHUB_COMMITTER.name, GITHUB_COMMITTER.email)
    html = f"{HTML}/{repo.full_name}/commit"
    return {
        "sha": raw.oid, "node_id": node_id("C", raw.oid), "url": _git_url(emu, repo, "commits", raw.oid),
        "html_url": f"{html}/{raw.oid}",
        "author": {"name": raw.author.name, "email": raw.author.email, "date": raw.author.date},
        "committer": {"name": raw.committer.name, "email": raw.committer.email, "date": raw.committer.date},
        "tree": {"sha": raw.tree, "url": _git_url(emu, repo, "trees", raw.tree)}, "message": raw.message,
        "parents": [{"sha": p, "url": _git_url(emu, repo, "commits", p), "html_url": f"{html}/{p}"}
                    for p in raw.parents],
        "verification": {"verified": signed_by_github, "reason": "valid" if signed_by_github else "unsigned",
                         "signature": None, "payload": None,
                         "verified_at": raw.committer.date if signed_by_github else None},
    }


def _tree_item(emu: GitHubEmulator, repo: RepoState, entry: TreeEntry) -> dict[str, Any]:
    """One entry of a `git-tree` object: blobs carry their size, submodules (commits) no url."""
    return {"path": entry.path, "mode": entry.mode, "type": entry.kind, "sha": entry.oid,
            **({"size": entry.size} if entry.kind == "blob" else {}),
            **({"url": _git_url(emu, repo, f"{entry.kind}s", entry.oid)} if entry.kind != "commit" else {})}


def _ref_json(emu: GitHubEmulator, repo: RepoState, name: str, oid: str, kind: str) -> dict[str, Any]:
    url = f"{emu.base_url}/repos/{repo.full_name}/git/{name}"
    target = _git_url(emu, repo, f"{kind}s", oid)
    return {"ref": name, "node_id": node_id("REF", f"{repo.full_name}:{name}"), "url": url,
            "object": {"sha": oid, "type": kind, "url": target}}


def _decode64(text: str) -> bytes:
    """Lenient like Ruby's Base64.decode64: non-alphabet characters are skipped, a short tail ignored."""
    clean = re.sub(r"[^A-Za-z0-9+/]", "", text)
    clean = clean[: len(clean) - len(clean) % 4] if len(clean) % 4 == 1 else clean + "=" * (-len(clean) % 4)
    return base64.b64decode(clean)


async def create_blob(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    repo = visible_repo(emu, installation_token(request, emu), op, ("contents",), "write")
    body = await read_json(request, emu, op, lenient=True)  # GitHub: skip_validation, then its own checks
    body = body if isinstance(body, dict) else {}
    content = body.get("content")
    if content is None:
        raise fail(op, 422, "Validation Failed",
                   errors=[{"resource": "Blob", "field": "content", "code": "missing_field"}])
    if not isinstance(content, str):
        raise fail(op, 422, "content must be a string",
                   errors=[{"resource": "Blob", "field": "content", "code": "invalid"}])
    encoding = body.get("encoding", "utf-8")
    if encoding not in ("utf-8", "base64"):  # GitHub stores anything but base64 as text
        emu.violations.append(f"{request.method} {request.path}: encoding {encoding!r} is not utf-8 or base64")
    data = _decode64(content) if encoding == "base64" else content.encode()
    sha = await _run(repo.git.write_blob, data)
    url = _git_url(emu, repo, "blobs", sha)
    return web.json_response({"sha": sha, "url": url}, status=201, headers={"Location": url})


async def get_commit(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    repo = visible_repo(emu, installation_token(request, emu), op, ("contents",), "read")
    sha = op.params["commit_sha"]
    if await _run(repo.git.object_type, sha) != "commit":
        raise not_found()
    return web.json_response(commit_json(emu, repo, await _run(repo.git.raw_commit, sha)))


def _path_problem(path: str) -> str | None:
    if not path:
        return "is missing"  # wording not seen from GitHub
    if path.startswith("/") or any(part.lower() in _BAD_SEGMENTS for part in path.split("/")):
        return "contains a malformed path component"  # wording not seen from GitHub
    return None


async def _tree_change(op: Operation, repo: RepoState, entry: Any) -> TreeChange:
    """One validated `tree` entry, in the order GitHub checks them (path, sha xor content, sha, mode)."""
    if not isinstance(entry, dict):
        raise fail(op, 422, "Invalid tree info")
    path = str(entry.get("path") or "").replace("\0", "")
    sha = str(entry["sha"]) if entry.get("sha") else None
    if problem := _path_problem(path):
        raise fail(op, 422, f"tree.path {problem}")
    if ("sha" in entry) == (entry.get("content") is not None):
        raise fail(op, 422, "Must supply either tree.sha or tree.content. Request will be rejected if both "
                            "are present.")
    mode, kind = entry.get("mode"), entry.get("type")
    if sha is not None:
        expected = kind or _MODE_KIND.get(str(mode), "blob")
        found = "commit" if expected == "commit" and FULL_OID.match(sha) else await _run(repo.git.object_type, sha)
        if found != expected:
            raise fail(op, 422, f"tree.sha {sha} is not a valid {kind or ''}".rstrip())
        if mode in TREE_MODES and _MODE_KIND.get(mode, "blob") != found:  # GitHub's rpc refuses it; wording ours
            raise fail(op, 422, f"tree.sha {sha} is not a valid {_MODE_KIND.get(mode, 'blob')}")
    if mode not in TREE_MODES:
        raise fail(op, 422, "Must supply a valid tree.mode")
    if mode == "040000" and "content" in entry:
        raise fail(op, 422, "A subdirectory may not have content")
    if sha is None and entry.get("content") is None:
        return TreeChange(path, mode, None)
    oid = sha or await _run(repo.git.write_blob, str(entry["content"]).encode())
    return TreeChange(path, mode, oid)


async def _base_tree(repo: RepoState, treeish: str) -> str | None:
    """GitHub's resolve_treeish: a tree, or a commit (its tree), named by sha or ref."""
    kind = await _run(repo.git.object_type, treeish)
    if kind == "tree":
        return treeish
    commit = treeish if kind == "commit" else await _run(repo.git.resolve, treeish)
    return None if commit is None else (await _run(repo.git.raw_commit, commit)).tree


async def create_tree(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    repo = visible_repo(emu, installation_token(request, emu), op, ("contents",), "write")
    body = await read_json(request, emu, op, lenient=True)  # GitHub: skip_validation, then its own checks
    body = body if isinstance(body, dict) else {}
    entries = body.get("tree")
    if not entries:
        raise fail(op, 422, "Invalid tree info")
    changes: dict[str, TreeChange] = {}
    for entry in entries if isinstance(entries, list) else [entries]:
        change = await _tree_change(op, repo, entry)
        changes[change.path] = change  # a later entry for a path wins, as in GitHub's hash of entries
    base = None
    if body.get("base_tree") is not None:
        base = await _base_tree(repo, str(body["base_tree"]))
        if base is None:
            raise fail(op, 422, "base_tree is not a valid tree oid")
    try:
        sha = await _run(build_tree, repo.git, base, list(changes.values()))
    except BadObjectState:
        raise fail(op, 422, "GitRPC::BadObjectState") from None
    entries = await _run(repo.git.list_tree, sha, "")
    if not entries:  # GitHub answers an empty resulting tree with 404
        raise not_found()
    url = _git_url(emu, repo, "trees", sha)
    items = [_tree_item(emu, repo, e) for e in entries]
    return web.json_response({"sha": sha, "url": url, "tree": items, "truncated": False}, status=201,
                             headers={"Location": url})


async def get_tree(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    """A tree by tree sha, commit sha or ref (GitHub resolves the last two to their tree).

    `recursive` set to any value lists the whole hierarchy, cut at `emu.tree_limit_entries` entries or
    `emu.tree_limit_bytes` of JSON with `truncated: true`, as GitHub cuts at 100,000 entries or 7 MB.
    """
    repo = visible_repo(emu, installation_token(request, emu), op, ("contents",), "read")
    sha = await _base_tree(repo, op.params["tree_sha"])
    if sha is None:
        raise not_found()
    recursive = "recursive" in request.query
    items, size, truncated = [], 0, False
    for entry in await _run(lambda: repo.git.tree_entries(sha, recursive=recursive)):
        item = _tree_item(emu, repo, entry)
        size += len(json.dumps(item))
        if recursive and (len(items) >= emu.tree_limit_entries or size > emu.tree_limit_bytes):
            truncated = True
            break
        items.append(item)
    return web.json_response({"sha": sha, "url": _git_url(emu, repo, "trees", sha), "tree": items,
                              "truncated": truncated})


def _base64_lines(data: bytes) -> str:
    """Base64 in lines of 60 characters, as GitHub (Ruby's `pack("m")`) writes a blob's content."""
    text = base64.b64encode(data).decode()
    return "".join(text[i:i + 60] + "\n" for i in range(0, len(text), 60))


async def get_blob(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    """A blob's bytes with the raw media type, else the JSON `blob` object with base64 content."""
    repo = visible_repo(emu, installation_token(request, emu), op, ("contents",), "read")
    sha = op.params["file_sha"]
    if await _run(repo.git.object_type, sha) != "blob":
        raise not_found()
    data = await _run(repo.git.blob, sha)
    if wants_raw(request):
        return web.Response(body=data, content_type="application/vnd.github.raw")
    return web.json_response({"sha": sha, "node_id": node_id("B", f"{repo.full_name}:{sha}"), "size": len(data),
                              "url": _git_url(emu, repo, "blobs", sha), "content": _base64_lines(data),
                              "encoding": "base64"})


def _actor(op: Operation, value: dict[str, Any], default_date: str) -> tuple[Identity, str]:
    for key in ("name", "email"):
        if not isinstance(value.get(key), str):
            raise fail(op, 422, f"Invalid request.\n\n\"{key}\" wasn't supplied.")
    return Identity(value["name"], value["email"]), value.get("date") or default_date


async def create_commit(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    repo = visible_repo(emu, installation_token(request, emu), op, ("contents",), "write")
    body = await read_json(request, emu, op)
    tree = body["tree"]
    if not FULL_OID.match(tree):
        raise fail(op, 422, "The tree parameter must be exactly 40 characters and contain only [0-9a-f].")
    kind = await _run(repo.git.object_type, tree)
    if kind != "tree":
        raise fail(op, 422, "Tree SHA does not exist" if kind is None else "Tree SHA is not a tree object")
    parents = body.get("parents") or []
    if not all(isinstance(p, str) and FULL_OID.match(p) for p in parents):
        raise fail(op, 422, "Each SHA in the 'parents' parameter must be exactly 40 characters and contain only "
                            "[0-9a-f].")
    for parent in parents:
        if await _run(repo.git.object_type, parent) != "commit":
            raise fail(op, 422, "Parent SHA does not exist or is not a commit object")
    now = now_iso()
    given_author, given_committer = body.get("author"), body.get("committer")
    signed = given_author is None and given_committer is None and body.get("signature") is None
    author, author_date = _actor(op, given_author, now) if given_author else (emu.app_author(), now)
    if signed:
        committer, committer_date = GITHUB_COMMITTER, now
    elif given_committer:
        committer, committer_date = _actor(op, given_committer, now)
    else:
        committer, committer_date = author, author_date
    if body.get("signature") is not None:
        emu.violations.append(f"{request.method} {request.path}: `signature` is not emulated (commit left unsigned)")
    oid = await _run(lambda: repo.git.commit_tree(tree, parents, body["message"], author=author,
                                                  committer=committer, author_date=author_date,
                                                  committer_date=committer_date))
    out = commit_json(emu, repo, await _run(repo.git.raw_commit, oid))
    return web.json_response(out, status=201, headers={"Location": out["url"]})


async def get_ref(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    repo = visible_repo(emu, installation_token(request, emu), op, ("contents",), "read")
    name = "refs/" + op.params["ref"]
    oid = await _run(repo.git.ref_target, name)
    if oid is None:
        raise not_found()
    return web.json_response(_ref_json(emu, repo, name, oid, await _run(repo.git.object_type, oid)))


async def update_ref(request: web.Request, emu: GitHubEmulator, op: Operation) -> web.StreamResponse:
    repo = visible_repo(emu, installation_token(request, emu), op, ("contents",), "write")
    body = await read_json(request, emu, op)
    sha, name = body["sha"], "refs/" + op.params["ref"]
    if not FULL_OID.match(sha):
        raise fail(op, 422, "The sha parameter must be exactly 40 characters and contain only [0-9a-f].")
    if re.match(r"refs/pull(/|$)", name):
        raise fail(op, 422, "refs/pull/* is read-only.")
    current = await _run(repo.git.ref_target, name)
    if current is None:
        raise fail(op, 422, "Reference does not exist")
    kind = await _run(repo.git.object_type, sha)
    if kind is None:
        raise fail(op, 422, "Object does not exist")
    if name.startswith("refs/heads/") and kind != "commit":
        raise fail(op, 422, "Object is not a commit")
    if not body.get("force", False) and not await _run(repo.git.is_ancestor, current, sha):
        raise fail(op, 422, "Update is not a fast forward")
    if not await _run(repo.git.update_ref, name, sha, current):  # someone moved it since we read it
        raise fail(op, 422, "Reference cannot be updated")
    return web.json_response(_ref_json(emu, repo, name, sha, kind))


HANDLERS: dict[tuple[str, str], Handler] = {
    ("POST", "/repos/{owner}/{repo}/git/blobs"): create_blob,
    ("GET", "/repos/{owner}/{repo}/git/blobs/{file_sha}"): get_blob,
    ("GET", "/repos/{owner}/{repo}/git/commits/{commit_sha}"): get_commit,
    ("GET", "/repos/{owner}/{repo}/git/trees/{tree_sha}"): get_tree,
    ("POST", "/repos/{owner}/{repo}/git/trees"): create_tree,
    ("POST", "/repos/{owner}/{repo}/git/commits"): create_commit,
    ("GET", "/repos/{owner}/{repo}/git/ref/{ref}"): get_ref,
    ("PATCH", "/repos/{owner}/{repo}/git/refs/{ref}"): update_ref,
}
