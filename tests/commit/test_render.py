"""Rendering: the tree builds with ``kubectl kustomize``, every object validates against its schema,
the manifests are hardened as promised, and the same input gives the same bytes."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from relay.events.deploy import IMAGE_TAG
from relay.settings import DeploySettings
from tests.commit.conftest import GITOPS_PATH, T0, digest_for, repo_root
from tests.commit.schemas import SchemaError, kustomize, validate
from workers.commit.committer import commit_message
from workers.commit.ops import Op
from workers.commit.render import AppSpec, Resources, label_value, render_app
from workers.commit.tree import Tree

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

DEFAULT = DeploySettings.model_validate({"gitops": {"path": GITOPS_PATH}})
HARDENED = DeploySettings.model_validate(
    {
        "gitops": {"path": GITOPS_PATH, "source_name": "homelab"},
        "manifests": {
            "network_policy": True,
            "read_only_root_filesystem": True,
            "run_as_user": None,
        },
    }
)


def spec(app: str = "hello", version: str = "v1", **kwargs: Any) -> AppSpec:
    values: dict[str, Any] = {
        "app": app,
        "version": version,
        "image": f"127.0.0.1:5000/{app}:{version}@{digest_for(app, version)}",
        "deployment_id": f"dep-{app}-{version}",
        "requested_at": T0,
        **kwargs,
    }
    return AppSpec(**values)


def deploy(s: AppSpec) -> Op:
    return Op(
        kind="deploy",
        app=s.app,
        deployment_id=s.deployment_id,
        requested_at=s.requested_at,
        version=s.version,
        spec=s,
    )


SPECS = [
    spec("hello"),
    spec(
        "web",
        "2024.06.1-rc_1",
        port=3000,
        replicas=2,
        env={"Z_LAST": "z", "A_FIRST": "a: b", "EMPTY": ""},
        health_path="/healthz",
        resources=Resources(
            cpu_request="50m", memory_request="64Mi", cpu_limit="1", memory_limit="1Gi"
        ),
    ),
]


def render_tree(root: Path, settings: DeploySettings, specs: list[AppSpec]) -> Tree:
    tree = Tree(root, settings)
    tree.apply([deploy(s) for s in specs])
    return tree


@pytest.mark.parametrize("settings", [DEFAULT, HARDENED], ids=["default", "hardened"])
def test_tree_builds_and_every_object_validates(tmp_path: Path, settings: DeploySettings) -> None:
    tree = render_tree(tmp_path, settings, SPECS)
    parents = kustomize(tree.base)
    assert [(o["kind"], o["metadata"]["name"]) for o in parents] == [
        ("Kustomization", "hello"),
        ("Kustomization", "web"),
    ]
    for flux_ks in parents:
        assert validate(flux_ks).startswith("crd kustomize.toolkit.fluxcd.io/v1")
        assert (tmp_path / flux_ks["spec"]["path"]).is_dir()  # points into the tree
        assert flux_ks["spec"]["sourceRef"]["name"] == settings.gitops.source_name
        apps = kustomize(tmp_path / flux_ks["spec"]["path"])
        kinds = sorted(o["kind"] for o in apps)
        expected = ["Deployment", "HTTPRoute", "Service"]
        if settings.manifests.network_policy:
            expected = sorted([*expected, "NetworkPolicy"])
        assert kinds == expected
        used = {obj["kind"]: validate(obj) for obj in apps}
        assert used.pop("HTTPRoute") == "crd gateway.networking.k8s.io/v1"
        assert set(used.values()) == {"kubernetes 1.32.0"}


def _ks(tmp_path: Path) -> dict[str, Any]:
    tree = render_tree(tmp_path, DEFAULT, SPECS[:1])
    return dict(yaml.safe_load((tree.app_dir("hello") / "ks.yaml").read_text()))


def test_strict_validation_catches_mistakes(tmp_path: Path) -> None:
    ks = _ks(tmp_path)
    validate(ks)
    typo = copy.deepcopy(ks)
    typo["spec"]["prnue"] = True
    with pytest.raises(SchemaError, match="prnue"):
        validate(typo)
    no_source = copy.deepcopy(ks)
    del no_source["spec"]["sourceRef"]
    with pytest.raises(SchemaError, match="sourceRef"):
        validate(no_source)
    files = render_app(SPECS[0], DEFAULT)
    route = yaml.safe_load(files["app/httproute.yaml"])
    route["spec"]["parentRefs"][0]["gateway"] = "x"
    with pytest.raises(SchemaError):
        validate(route)
    deployment = yaml.safe_load(files["app/deployment.yaml"])
    deployment["spec"]["replicas"] = "one"
    with pytest.raises(SchemaError, match="replicas"):
        validate(deployment)


def _render_elsewhere(root: Path, seed: str) -> None:
    """Render the same input in a fresh interpreter with another hash seed."""
    code = (
        "import sys; from pathlib import Path; from tests.commit import test_render as t; "
        "t.render_tree(Path(sys.argv[1]), t.HARDENED, list(reversed(t.SPECS)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": seed}
    subprocess.run(
        [sys.executable, "-c", code, str(root)], check=True, env=env, cwd=repo_root(), timeout=60
    )


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_same_input_gives_byte_identical_files(tmp_path: Path) -> None:
    render_tree(tmp_path / "here", HARDENED, SPECS)
    _render_elsewhere(tmp_path / "there", "12345")
    here, there = _snapshot(tmp_path / "here"), _snapshot(tmp_path / "there")
    assert len(here) == 2 * 6 + 1
    assert here == there
    # Writing it again changes nothing, and nothing in the files depends on the clock.
    tree = Tree(tmp_path / "here", HARDENED)
    assert {r.status for r in tree.apply([deploy(s) for s in SPECS]).values()} == {"unchanged"}
    deployments = [body for name, body in here.items() if name.endswith("deployment.yaml")]
    assert all(b"2026-03-01T12:00:00.000000Z" in body for body in deployments)


def test_deployment_is_hardened_and_pinned() -> None:
    files = render_app(SPECS[1], DEFAULT)
    d = yaml.safe_load(files["app/deployment.yaml"])
    pod = d["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["image"].endswith("@" + digest_for("web", SPECS[1].version))
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "readOnlyRootFilesystem" not in sc
    assert c["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["ports"] == [{"name": "http", "containerPort": 3000, "protocol": "TCP"}]
    assert [e["name"] for e in c["env"]] == ["A_FIRST", "EMPTY", "Z_LAST"]
    assert d["metadata"]["annotations"]["relay.dev/deployment-id"] == SPECS[1].deployment_id
    labels = d["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "relay"
    assert labels["app.kubernetes.io/name"] == labels["app.kubernetes.io/instance"] == "web"
    assert labels["app.kubernetes.io/version"] == SPECS[1].version
    assert d["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "web",
        "app.kubernetes.io/instance": "web",
    }


def test_defaults_tcp_probes_and_pi_sized_resources() -> None:
    files = render_app(SPECS[0], HARDENED)
    [c] = yaml.safe_load(files["app/deployment.yaml"])["spec"]["template"]["spec"]["containers"]
    assert c["readinessProbe"]["tcpSocket"] == {"port": "http"}
    assert c["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "500m", "memory": "512Mi"},
    }
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    service = yaml.safe_load(files["app/service.yaml"])
    assert service["spec"]["ports"][0]["port"] == 80
    route = yaml.safe_load(files["app/httproute.yaml"])
    assert route["spec"]["hostnames"] == ["hello.apps.example.com"]
    assert route["spec"]["parentRefs"] == [{"name": "cilium-gateway", "namespace": "network"}]
    assert "app/networkpolicy.yaml" in files


@given(st.from_regex(IMAGE_TAG, fullmatch=True))
def test_any_version_makes_a_valid_label(version: str) -> None:
    value = label_value(version)
    assert len(value) <= 63
    assert LABEL_VALUE.match(value), value


def test_older_request_is_not_written(tmp_path: Path) -> None:
    tree = render_tree(tmp_path, DEFAULT, [spec("app", "v2", requested_at=T0)])
    before = _snapshot(tmp_path)
    older = spec("app", "v1", requested_at=T0 - timedelta(seconds=1))
    [result] = tree.apply([deploy(older)]).values()
    assert result.status == "superseded"
    assert _snapshot(tmp_path) == before


def test_turning_the_network_policy_off_removes_its_file(tmp_path: Path) -> None:
    render_tree(tmp_path, HARDENED, [spec("app")])
    tree = Tree(tmp_path, DEFAULT)
    [result] = tree.apply([deploy(spec("app"))]).values()
    assert f"{GITOPS_PATH}/app/app/networkpolicy.yaml" in result.paths
    assert not (tree.app_dir("app") / "app" / "networkpolicy.yaml").exists()
    assert [o["kind"] for o in kustomize(tree.app_dir("app") / "app")] == [
        "Service",
        "Deployment",
        "HTTPRoute",
    ]


def test_commit_message_names_apps_versions_and_deployments() -> None:
    ops = [deploy(spec(f"app{i}", f"v{i}")) for i in range(5)]
    message = commit_message(ops)
    subject, _, body = message.partition("\n\n")
    assert subject == "relay: deploy app0 v0, app1 v1, app2 v2 (+2 more)"
    for op in ops:
        assert f"{op.app} {op.version} (deployment {op.deployment_id})" in body


def test_libyaml_and_pure_python_emitters_write_the_same_bytes() -> None:
    from workers.commit import render

    for spec in SPECS:
        for name, body in render_app(spec, HARDENED).items():
            obj = yaml.safe_load(body)
            pure = yaml.dump(
                obj,
                Dumper=yaml.SafeDumper,
                sort_keys=False,
                default_flow_style=False,
                allow_unicode=True,
                width=4096,
            )
            assert render.dump(obj) == pure.encode(), name


def test_changes_name_every_file_written_or_removed(tmp_path: Path) -> None:
    """The commit is made from ``Tree.changes``: exactly the files whose bytes changed, with
    their new bytes, and None for each file removed."""
    first = Tree(tmp_path, HARDENED)
    first.apply([deploy(spec("a")), deploy(spec("b")), deploy(spec("c"))])
    assert first.changes == _in_repo(tmp_path) and len(first.changes) == 3 * 6 + 1

    steps: list[tuple[DeploySettings, list[Op]]] = [
        # network policy off: a's and b's folders change, c is not in the batch
        (DEFAULT, [deploy(spec("a")), deploy(spec("b", "v2", requested_at=T0 + timedelta(1)))]),
        (DEFAULT, [deploy(spec("a"))]),  # nothing to do
        (DEFAULT, [delete(spec("b"), T0 + timedelta(2))]),  # b's files and the parent
    ]
    for settings, ops in steps:
        before = _in_repo(tmp_path)
        tree = Tree(tmp_path, settings)
        tree.apply(ops)
        after = _in_repo(tmp_path)
        expected = {p: after.get(p) for p in before.keys() | after.keys()}
        assert tree.changes == {p: b for p, b in expected.items() if before.get(p) != b}
    assert not any(p.startswith(f"{GITOPS_PATH}/b/") for p in _in_repo(tmp_path))


def _in_repo(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def delete(s: AppSpec, at: Any) -> Op:
    return Op(kind="delete", app=s.app, deployment_id=f"del-{s.app}", requested_at=at)
