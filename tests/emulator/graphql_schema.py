"""The GraphQL schema the emulator validates and executes against, and GitHub-shaped validation errors.

With GitHub's published `schema.graphql` every document the App sends is validated against the real
API, so a misspelt field fails here as it would in production. Without it, `EMBEDDED_SDL` (a subset
copied from the real schema; test_emulator.py checks that it still matches) keeps the emulator working
in a fresh clone.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from pathlib import Path
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLScalarType,
    GraphQLSchema,
    InlineFragmentNode,
    Node,
    OperationDefinitionNode,
    build_ast_schema,
    parse,
)

EMBEDDED_SDL = '''
schema { query: Query mutation: Mutation }
scalar Base64String
scalar DateTime
scalar GitObjectID
scalar URI
interface Node { id: ID! }
interface GitObject {
  abbreviatedOid: String!
  commitResourcePath: URI!
  commitUrl: URI!
  id: ID!
  oid: GitObjectID!
  repository: Repository!
}
type Commit implements GitObject & Node {
  abbreviatedOid: String!
  commitResourcePath: URI!
  commitUrl: URI!
  committedDate: DateTime!
  id: ID!
  message: String!
  messageBody: String!
  messageHeadline: String!
  file(path: String!): TreeEntry
  history(after: String, before: String, first: Int, last: Int, path: String): CommitHistoryConnection!
  oid: GitObjectID!
  repository: Repository!
  url: URI!
}
type CommitHistoryConnection { edges: [CommitEdge] nodes: [Commit] pageInfo: PageInfo! totalCount: Int! }
type CommitEdge { cursor: String! node: Commit }
type Blob implements GitObject & Node {
  abbreviatedOid: String!
  byteSize: Int!
  commitResourcePath: URI!
  commitUrl: URI!
  id: ID!
  isBinary: Boolean
  isTruncated: Boolean!
  oid: GitObjectID!
  repository: Repository!
  text: String
}
type Tree implements GitObject & Node {
  abbreviatedOid: String!
  commitResourcePath: URI!
  commitUrl: URI!
  id: ID!
  oid: GitObjectID!
  repository: Repository!
}
type TreeEntry {
  extension: String
  mode: Int!
  name: String!
  object: GitObject
  oid: GitObjectID!
  path: String
  size: Int!
  type: String!
}
type PageInfo {
  endCursor: String
  hasNextPage: Boolean!
  hasPreviousPage: Boolean!
  startCursor: String
}
type RefEdge { cursor: String! node: Ref }
type RefConnection { edges: [RefEdge] nodes: [Ref] pageInfo: PageInfo! totalCount: Int! }
type Ref implements Node {
  id: ID!
  name: String!
  prefix: String!
  repository: Repository!
  target: GitObject
}
type Repository implements Node {
  defaultBranchRef: Ref
  id: ID!
  name: String!
  nameWithOwner: String!
  ref(qualifiedName: String!): Ref
  refs(after: String, before: String, first: Int, last: Int, query: String, refPrefix: String!): RefConnection
  url: URI!
}
type Query {
  repository(followRenames: Boolean = true, name: String!, owner: String!): Repository
}
input CommittableBranch { branchName: String id: ID repositoryNameWithOwner: String }
input CommitMessage { body: String headline: String! }
input FileAddition { contents: Base64String! path: String! }
input FileDeletion { path: String! }
input FileChanges { additions: [FileAddition!] deletions: [FileDeletion!] }
input CreateCommitOnBranchInput {
  branch: CommittableBranch!
  clientMutationId: String
  expectedHeadOid: GitObjectID!
  fileChanges: FileChanges
  message: CommitMessage!
}
type CreateCommitOnBranchPayload { clientMutationId: String commit: Commit ref: Ref }
type Mutation {
  createCommitOnBranch(input: CreateCommitOnBranchInput!): CreateCommitOnBranchPayload
}
'''

_OID = re.compile(r"^[0-9a-fA-F]{40}$")


def _parse_base64(value: Any) -> str:
    if not isinstance(value, str):
        raise GraphQLError(f"Could not coerce value {value!r} to Base64String")
    try:
        base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise GraphQLError(f"Could not coerce value {value!r} to Base64String (invalid base64)") from exc
    return value


def _parse_oid(value: Any) -> str:
    if not isinstance(value, str) or not _OID.match(value):
        raise GraphQLError(f"Could not coerce value {value!r} to GitObjectID")
    return value.lower()


@functools.cache
def load_schema(path: Path | None) -> GraphQLSchema:
    """GitHub's schema from `path` (cached per path: it takes ~0.5 s to build), else the embedded one.

    GitHub's published SDL breaks two spec rules (a field defined twice on EnterpriseOwnerInfo, and
    deprecated implementations of non-deprecated interface fields), which GitHub itself tolerates, so
    it is built with the SDL and schema checks skipped.
    """
    source = EMBEDDED_SDL if path is None else Path(path).read_text()
    schema = build_ast_schema(parse(source), assume_valid=True, assume_valid_sdl=True)
    for name, parser in (("Base64String", _parse_base64), ("GitObjectID", _parse_oid)):
        scalar = schema.type_map[name]
        assert isinstance(scalar, GraphQLScalarType)
        scalar.parse_value = scalar.coerce_input_value = parser  # type: ignore[method-assign]
    return schema


def _label(node: Node) -> str:
    if isinstance(node, FieldNode):
        return node.name.value
    if isinstance(node, InlineFragmentNode):
        return f"... on {node.type_condition.name.value}" if node.type_condition else "..."
    if isinstance(node, FragmentSpreadNode):
        return f"... {node.name.value}"
    if isinstance(node, OperationDefinitionNode):
        return node.operation.value + (f" {node.name.value}" if node.name else "")
    if isinstance(node, FragmentDefinitionNode):
        return f"fragment {node.name.value}"
    return "?"


def node_path(doc: DocumentNode, target: Node) -> list[str] | None:
    """GitHub's `path` for a validation error: operation label, then field names down to the node."""

    def walk(node: Node, trail: list[str]) -> list[str] | None:
        if node is target:
            return trail
        for arg in getattr(node, "arguments", None) or ():
            if arg is target:
                return [*trail, arg.name.value]
        selection_set = getattr(node, "selection_set", None)
        for child in selection_set.selections if selection_set else ():
            found = walk(child, [*trail, _label(child)])
            if found:
                return found
        return None

    for definition in doc.definitions:
        found = walk(definition, [_label(definition)])
        if found:
            return found
    return None


# graphql-core's validation messages -> GitHub's (graphql-ruby) message and extensions.code.
_REWRITES: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"Cannot query field '(?P<fieldName>[^']+)' on type '(?P<typeName>[^']+)'"),
     "Field '{fieldName}' doesn't exist on type '{typeName}'", "undefinedField"),
    (re.compile(r"Unknown argument '(?P<argumentName>[^']+)' on field '[^.']+\.(?P<name>[^']+)'"),
     "Field '{name}' doesn't accept argument '{argumentName}'", "argumentNotAccepted"),
    (re.compile(r"Field '(?P<name>[^']+)' argument '(?P<arguments>[^']+)' of type .* is required"),
     "Field '{name}' is missing required arguments: {arguments}", "missingRequiredArguments"),
    (re.compile(r"Unknown type '(?P<typeName>[^']+)'"), "No such type {typeName}, so it can't be used",
     "undefinedType"),
]


def github_validation_error(doc: DocumentNode, error: GraphQLError) -> dict[str, Any]:
    """One validation error in the shape api.github.com sends (HTTP 200, no `data`)."""
    out: dict[str, Any] = {}
    node = error.nodes[0] if error.nodes else None
    path = node_path(doc, node) if node is not None else None
    if path:
        out["path"] = path
    message = error.message
    for pattern, template, code in _REWRITES:
        m = pattern.search(message)
        if m:
            message = template.format(**m.groupdict())
            out["extensions"] = {"code": code, **m.groupdict()}
            break
    if error.locations:
        out["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    out["message"] = message
    return out
