"""REST conformance: match requests to GitHub's OpenAPI description and validate bodies against it.

With GitHub's real `api.github.com.json` every request path, method and JSON body is checked against
what GitHub documents, and responses can be checked in tests. Without it a small embedded description
of the emulated operations (copied from the real one) gives the same behaviour, just fewer guarantees.
The real file is OpenAPI 3.0 (`nullable`), so schemas are rewritten once into JSON Schema 2020-12.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from .embedded import EMBEDDED

__all__ = ["EMBEDDED", "OpenAPISpec", "Operation", "load_spec"]

BASE_URI = "urn:github-openapi"
_SLASHED_PARAMS = {"path", "ref", "branch", "basehead", "tree_sha"}  # `x-multi-segment` in GitHub's file


@dataclass(frozen=True)
class Operation:
    """A matched operation: its path template, method, path parameters and OpenAPI object."""

    template: str
    method: str
    params: dict[str, str]
    spec: dict[str, Any]


def _to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema 2020-12: `nullable`, and `$ref`s made absolute to BASE_URI."""
    if isinstance(node, list):
        return [_to_json_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v) for k, v in node.items() if k != "nullable"}
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        out["$ref"] = BASE_URI + ref
    if node.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


class OpenAPISpec:
    """A loaded description: path matching plus request/response schema validation."""

    def __init__(self, doc: dict[str, Any], *, source: str) -> None:
        self.source = source
        self.doc = _to_json_schema(doc)
        self.registry: Registry = Registry().with_resource(
            BASE_URI, Resource.from_contents(self.doc, default_specification=DRAFT202012))
        self._templates: list[tuple[str, int, list[str], re.Pattern[str], re.Pattern[str]]] = []
        for template in self.doc["paths"]:
            parts = re.split(r"(\{[^}]+\})", template)
            literal = sum(len(p) for p in parts if not p.startswith("{"))
            names = [p[1:-1] for p in parts if p.startswith("{")]
            strict = "".join("([^/]+)" if p.startswith("{") else re.escape(p) for p in parts)
            # GitHub lets a trailing path-like parameter (a contents path, a ref) span slashes.
            spans = template.endswith("}") and names[-1] in _SLASHED_PARAMS
            loose = strict[: -len("([^/]+)")] + "(.+)" if spans else strict
            self._templates.append((template, literal, names, re.compile(strict + "$"), re.compile(loose + "$")))

    def match(self, method: str, path: str) -> Operation | None:
        """The operation for this request, or None if GitHub documents no such path and method."""
        method = method.lower()
        for loose in (False, True):
            found = [(lit, tpl, dict(zip(names, m.groups(), strict=True)))
                     for tpl, lit, names, strict, relaxed in self._templates
                     if (m := (relaxed if loose else strict).match(path)) and method in self.doc["paths"][tpl]]
            if found:
                _, tpl, params = max(found, key=lambda f: f[0])
                return Operation(tpl, method.upper(), params, self._deref(self.doc["paths"][tpl][method]))
        return None

    def _deref(self, node: Any) -> Any:
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            node = self.registry.resolver().lookup(node["$ref"]).contents
        return node

    def _errors(self, schema: dict[str, Any], value: Any) -> list[str]:
        validator = Draft202012Validator(schema, registry=self.registry)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        return [f"{'/'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}"[:500] for e in errors[:5]]

    def request_body_errors(self, op: Operation, body: Any, *, has_body: bool) -> list[str]:
        """Problems with a request's JSON body according to the operation's requestBody."""
        request_body = self._deref(op.spec.get("requestBody"))
        if not request_body:
            return []
        if not has_body:
            return ["request body is required"] if request_body.get("required") else []
        schema = request_body.get("content", {}).get("application/json", {}).get("schema")
        return self._errors(schema, body) if schema else []

    def response_errors(self, op: Operation, status: int, body: Any,
                        content_type: str = "application/json") -> list[str]:
        """Problems with a response body according to the operation's documented response."""
        responses = op.spec.get("responses", {})
        response = self._deref(responses.get(str(status)) or responses.get("default"))
        if response is None:
            return [f"status {status} is not documented for {op.method} {op.template}"]
        media = response.get("content", {}).get(content_type)
        if media is None:
            return [] if body is None else [f"no {content_type} body documented for status {status}"]
        return self._errors(media["schema"], body)


@functools.cache
def load_spec(path: Path | None) -> OpenAPISpec:
    """The description at `path` (cached per path: the real one is 13 MB), or the embedded one."""
    if path is None:
        return OpenAPISpec(EMBEDDED, source="embedded")
    return OpenAPISpec(json.loads(Path(path).read_text()), source=str(path))
