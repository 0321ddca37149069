"""The embedded OpenAPI description: the emulated operations, request bodies copied from GitHub's real
`api.github.com.json` (test_emulator.py checks them against it when the real one is there), plus each
operation's documentation URL, which GitHub puts in its error bodies."""

from __future__ import annotations

from typing import Any

_REACTIONS = ["+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"]
_CONCLUSIONS = ["action_required", "cancelled", "failure", "neutral", "success", "skipped", "stale", "timed_out"]
_S: dict[str, Any] = {"type": "string"}
_ACTIONS = {"type": "array", "maxItems": 3, "items": {
    "type": "object", "required": ["label", "description", "identifier"],
    "properties": {"label": {"type": "string", "maxLength": 20},
                   "description": {"type": "string", "maxLength": 40},
                   "identifier": {"type": "string", "maxLength": 20}}}}
_ANNOTATIONS = {"type": "array", "maxItems": 50, "items": {
    "type": "object", "required": ["path", "start_line", "end_line", "annotation_level", "message"],
    "properties": {"path": _S, "start_line": {"type": "integer"}, "end_line": {"type": "integer"},
                   "start_column": {"type": "integer"}, "end_column": {"type": "integer"},
                   "annotation_level": {"type": "string", "enum": ["notice", "warning", "failure"]},
                   "message": _S, "title": _S, "raw_details": _S}}}
_IMAGES = {"type": "array", "items": {"type": "object", "required": ["alt", "image_url"],
                                      "properties": {"alt": _S, "image_url": _S, "caption": _S}}}
_ACTOR = {"type": "object", "properties": {"name": _S, "email": _S, "date": _S}}
_B: dict[str, Any] = {"type": "boolean"}
_LATEST = {"type": "string", "enum": ["true", "false", "legacy"]}
_RELEASE = {"tag_name": _S, "target_commitish": _S, "name": _S, "body": _S, "draft": _B, "prerelease": _B,
            "discussion_category_name": _S, "make_latest": _LATEST}


def _body(schema: dict[str, Any], required: bool) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _op(docs: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"externalDocs": {"url": f"https://docs.github.com/rest/{docs}"}}
    if body is not None:
        op["requestBody"] = body
    return op


def _check_run(required: list[str], status: list[str], output_required: list[str]) -> dict[str, Any]:
    props: dict[str, Any] = {
        "name": _S, "head_sha": _S, "details_url": _S, "external_id": _S,
        "status": {"type": "string", "enum": status}, "started_at": _S,
        "conclusion": {"type": "string", "enum": _CONCLUSIONS}, "completed_at": _S,
        "output": {"type": "object", "required": output_required, "properties": {
            "title": _S, "summary": {"type": "string", "maxLength": 65535},
            "text": {"type": "string", "maxLength": 65535}, "annotations": _ANNOTATIONS, "images": _IMAGES}},
        "actions": _ACTIONS}
    if "head_sha" not in required:
        del props["head_sha"]
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema


EMBEDDED: dict[str, Any] = {
    "openapi": "3.0.3",
    "paths": {
        "/app/installations/{installation_id}/access_tokens": {"post": _op(
            "apps/apps#create-an-installation-access-token-for-an-app", _body({
                "type": "object", "properties": {
                    "repositories": {"type": "array", "items": _S},
                    "repository_ids": {"type": "array", "items": {"type": "integer"}},
                    "permissions": {"type": "object", "additionalProperties": _S}}}, False))},
        "/app": {"get": _op("apps/apps#get-the-authenticated-app")},
        "/app-manifests/{code}/conversions": {"post": _op("apps/apps#create-a-github-app-from-a-manifest")},
        "/app/hook/deliveries": {"get": _op("apps/webhooks#list-deliveries-for-an-app-webhook")},
        "/app/hook/deliveries/{delivery_id}/attempts": {"post": _op(
            "apps/webhooks#redeliver-a-delivery-for-an-app-webhook")},
        "/repos/{owner}/{repo}/collaborators/{username}/permission": {"get": _op(
            "collaborators/collaborators#get-repository-permissions-for-a-user")},
        "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions": {"post": _op(
            "reactions/reactions#create-reaction-for-an-issue-comment", _body({
                "type": "object", "properties": {"content": {"type": "string", "enum": _REACTIONS}},
                "required": ["content"]}, True))},
        "/repos/{owner}/{repo}/issues/comments/{comment_id}": {"patch": _op(
            "issues/comments#update-an-issue-comment", _body({
                "type": "object", "properties": {"body": _S}, "required": ["body"]}, True))},
        "/repos/{owner}/{repo}/issues/{issue_number}/comments": {
            "get": _op("issues/comments#list-issue-comments"),
            "post": _op("issues/comments#create-an-issue-comment", _body({
                "type": "object", "properties": {"body": _S}, "required": ["body"]}, True))},
        "/repos/{owner}/{repo}/contents/{path}": {"get": _op("repos/contents#get-repository-content")},
        "/repos/{owner}/{repo}/pulls/{pull_number}": {"get": _op("pulls/pulls#get-a-pull-request")},
        "/repos/{owner}/{repo}/tarball/{ref}": {"get": _op("repos/contents#download-a-repository-archive-tar")},
        "/repos/{owner}/{repo}/check-runs": {"post": _op("reference/checks#create-a-check-run", _body(
            _check_run(["name", "head_sha"], ["queued", "in_progress", "completed"], ["title", "summary"]), True))},
        "/repos/{owner}/{repo}/check-runs/{check_run_id}": {
            "get": _op("checks/runs#get-a-check-run"),
            "patch": _op("checks/runs#update-a-check-run", _body(_check_run(
                [], ["queued", "in_progress", "completed", "waiting", "requested", "pending"], ["summary"]), True))},
        "/repos/{owner}/{repo}/commits/{ref}/check-runs": {"get": _op(
            "checks/runs#list-check-runs-for-a-git-reference")},
        "/repos/{owner}/{repo}/git/blobs": {"post": _op("git/blobs#create-a-blob", _body({
            "type": "object", "properties": {"content": _S, "encoding": _S}, "required": ["content"]}, True))},
        "/repos/{owner}/{repo}/git/commits": {"post": _op("git/commits#create-a-commit", _body({
            "type": "object", "required": ["message", "tree"], "properties": {
                "message": _S, "tree": _S, "parents": {"type": "array", "items": _S},
                "author": {**_ACTOR, "required": ["name", "email"]}, "committer": _ACTOR, "signature": _S}}, True))},
        "/repos/{owner}/{repo}/git/commits/{commit_sha}": {"get": _op("git/commits#get-a-commit-object")},
        "/repos/{owner}/{repo}/git/blobs/{file_sha}": {"get": _op("git/blobs#get-a-blob")},
        "/repos/{owner}/{repo}/git/trees/{tree_sha}": {"get": {
            **_op("git/trees#get-a-tree"),
            "parameters": [{"name": "recursive", "in": "query", "required": False, "schema": _S}]}},
        "/repos/{owner}/{repo}/git/trees": {"post": _op("git/trees#create-a-tree", _body({
            "type": "object", "required": ["tree"], "properties": {"base_tree": _S, "tree": {
                "type": "array", "items": {"type": "object", "properties": {
                    "path": _S, "mode": {"type": "string", "enum": ["100644", "100755", "040000", "160000", "120000"]},
                    "type": {"type": "string", "enum": ["blob", "tree", "commit"]},
                    "sha": {"type": "string", "nullable": True}, "content": _S}}}}}, True))},
        "/repos/{owner}/{repo}/git/ref/{ref}": {"get": _op("git/refs#get-a-reference")},
        "/repos/{owner}/{repo}/git/refs/{ref}": {"patch": _op("git/refs#update-a-reference", _body({
            "type": "object", "required": ["sha"], "properties": {"sha": _S, "force": {"type": "boolean"}}}, True))},
        "/repos/{owner}/{repo}/releases": {
            "get": _op("releases/releases#list-releases"),
            "post": _op("releases/releases#create-a-release", _body({
                "type": "object", "required": ["tag_name"],
                "properties": {**_RELEASE, "generate_release_notes": _B}}, True))},
        "/repos/{owner}/{repo}/releases/tags/{tag}": {"get": _op("releases/releases#get-a-release-by-tag-name")},
        "/repos/{owner}/{repo}/releases/{release_id}": {
            "get": _op("releases/releases#get-a-release"),
            "patch": _op("releases/releases#update-a-release", _body({
                "type": "object", "properties": dict(_RELEASE)}, False))},
        "/repos/{owner}/{repo}/releases/{release_id}/assets": {
            "get": _op("releases/assets#list-release-assets"),
            "post": {**_op("releases/assets#upload-a-release-asset"), "parameters": [
                {"name": "name", "in": "query", "required": True, "schema": _S},
                {"name": "label", "in": "query", "schema": _S}]}},
        "/repos/{owner}/{repo}/releases/assets/{asset_id}": {
            "get": _op("releases/assets#get-a-release-asset"),
            "delete": _op("releases/assets#delete-a-release-asset")},
    },
    "components": {"schemas": {}},
}
