"""Every object under k8s/, as Flux applies it, validates against its kind's schema.

Core kinds with kubernetes-validate (offline, strict); Flux and Gateway API kinds against the CRDs
in shared/crds/; the rest against the documented partial schemas of ``tests/ship/schemas.py``
(its docstring says what those check and what they cannot).
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate.utils import SchemaNotFoundError

from tests.ship import kube, schemas

KUBERNETES_VERSION = "1.32.0"


@pytest.fixture(scope="module")
def crd(shared: Path) -> dict[tuple[str, str], schemas.Schema]:
    return schemas.crd_schemas(shared / "crds")


def _validate(obj: kube.Obj, crd: dict[tuple[str, str], schemas.Schema]) -> str:
    key = (obj["apiVersion"], obj["kind"])
    schema = crd.get(key) or schemas.PARTIAL.get(key)
    if schema is not None:
        jsonschema.Draft7Validator(schema).validate(obj)
        return "crd" if key in crd else "partial"
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except SchemaNotFoundError:
        pytest.fail(f"{kube.describe(obj)}: no schema for {key}; add one to tests/ship/schemas.py")
    return "core"


def test_every_object_validates(
    tree: kube.Tree, crd: dict[tuple[str, str], schemas.Schema]
) -> None:
    seen: dict[str, int] = {}
    failures = []
    for folder, obj in tree.objects():
        try:
            how = _validate(obj, crd)
        except jsonschema.ValidationError as exc:
            where = ".".join(str(p) for p in exc.absolute_path)
            failures.append(f"{folder}: {kube.describe(obj)}: {where}: {exc.message}")
            continue
        seen[how] = seen.get(how, 0) + 1
    assert not failures, "\n".join(failures)
    assert seen.get("core", 0) > 30 and seen.get("crd", 0) >= 5 and seen.get("partial", 0) >= 8


def test_the_flux_kinds_are_checked_against_the_shared_crds(
    tree: kube.Tree, crd: dict[tuple[str, str], schemas.Schema]
) -> None:
    kinds = {(o["apiVersion"], o["kind"]) for _, o in tree.objects()}
    for key in [
        ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
        ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ]:
        assert key in kinds and key in crd


def test_a_misspelt_field_fails(
    tree: kube.Tree, crd: dict[tuple[str, str], schemas.Schema]
) -> None:
    """The strictness the other tests rely on: an unknown field fails in each kind of schema."""
    samples = {
        "Deployment": ("core", kubernetes_validate.utils.ValidationError),
        "Kustomization": ("crd", jsonschema.ValidationError),
        "HTTPRoute": ("crd", jsonschema.ValidationError),
        "HelmRelease": ("partial", jsonschema.ValidationError),
    }
    for kind, (_, error) in samples.items():
        obj = next(o for _, o in tree.objects() if o["kind"] == kind)
        broken = {**obj, "spec": {**obj["spec"], "replicaz": 1}}
        with pytest.raises(error):
            _validate(broken, crd)


def test_a_substituted_value_is_validated(
    tree: kube.Tree, crd: dict[tuple[str, str], schemas.Schema]
) -> None:
    route = next(o for o in tree.of_kind("HTTPRoute") if "example.com" in o["spec"]["hostnames"][0])
    broken = {**route, "spec": {**route["spec"], "hostnames": ["relay.${DOMAIN}"]}}
    with pytest.raises(jsonschema.ValidationError):
        _validate(broken, crd)
