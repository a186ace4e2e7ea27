"""What the OpenAPI document promises about one answer, checked against a real answer.

``check(method, template, status, headers, body)`` fails when the status is not documented for
the operation, a documented header (``Retry-After``) is missing or malformed, or a JSON body does
not validate against the documented schema (JSON Schema 2020-12, as OpenAPI 3.1 uses).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from tests.api import openapi_doc

DOCUMENT = openapi_doc.load()


def resolve(node: Any) -> Any:
    """Follow a local ``$ref`` (one level after another) inside the document."""
    while isinstance(node, dict) and set(node) == {"$ref"}:
        target: Any = DOCUMENT
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def operation(method: str, template: str) -> dict[str, Any]:
    found: dict[str, Any] = DOCUMENT["paths"][template][method.lower()]
    return found


def response_spec(method: str, template: str, status: int) -> dict[str, Any]:
    responses = operation(method, template)["responses"]
    assert str(status) in responses, f"{method} {template} answered {status}: not documented"
    spec: dict[str, Any] = resolve(responses[str(status)])
    return spec


def validate(schema: dict[str, Any], instance: Any) -> None:
    rooted = {**schema, "components": DOCUMENT["components"]}
    Draft202012Validator(rooted, format_checker=FormatChecker()).validate(instance)


def check(method: str, template: str, status: int, headers: Mapping[str, str], body: bytes) -> Any:
    """Check one answer against the document; returns the decoded JSON body (or None)."""
    spec = response_spec(method, template, status)
    for name, reference in spec.get("headers", {}).items():
        header = resolve(reference)
        if header.get("required"):
            assert name in headers, f"{status} without its {name} header"
            validate(header["schema"], headers[name])
    content = spec.get("content", {})
    media = headers.get("Content-Type", "").split(";", 1)[0].strip()
    assert media in content, f"{status} answered {media!r}; documented: {sorted(content)}"
    if media != "application/json":
        return None
    decoded = json.loads(body)
    validate(content[media]["schema"], decoded)
    return decoded
