"""Validate rendered objects offline: core kinds with ``kubernetes-validate`` (strict), Flux and
Gateway API kinds with the OpenAPI v3 schema of their CRD from ``shared/crds`` (made strict the
way ``kubectl --validate=strict`` is: unknown fields are errors, not silently pruned)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.commit.conftest import SHARED

KUBERNETES_VERSION = "1.32.0"


class SchemaError(AssertionError):
    pass


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the strict openAPIV3Schema of every CRD in shared/crds."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted((SHARED / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            found[(f"{group}/{version['name']}", kind)] = schema
    return found


def strict(schema: Any) -> Any:
    """Forbid properties a schema does not name (unless it keeps unknown fields on purpose)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) if k != "x-kubernetes-validations" else v for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def validate(obj: dict[str, Any]) -> str:
    """Validate one object; returns which schema did it, raises ``SchemaError``."""
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    schema = crd_schemas().get(key)
    if schema is not None:
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=str)
        if errors:
            where = ".".join(str(p) for p in errors[0].absolute_path)
            raise SchemaError(f"{key}: {where}: {errors[0].message}")
        return f"crd {key[0]}"
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        raise SchemaError(f"{key}: {where}: {exc.message}") from None
    return f"kubernetes {KUBERNETES_VERSION}"


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of a folder, as objects (fails the test if it does not build)."""
    kubectl = Path("/usr/bin/kubectl")
    if not kubectl.exists():
        pytest.fail("kubectl is needed at /usr/bin/kubectl (a v1.32 client with kustomize)")
    built = subprocess.run(
        [str(kubectl), "kustomize", str(folder)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert built.returncode == 0, f"kubectl kustomize {folder} failed: {built.stderr}"
    return [o for o in yaml.safe_load_all(built.stdout) if o]
