"""The relay configs shipped in k8s/ and compose/ load with the real Settings model.

Each config is loaded by ``relay.settings.load_settings`` exactly as a pod or container would,
with its secret paths pointed at temporary files, and every secret path it names is provided by
the Secret (Kubernetes) or the service's compose secrets.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay.settings import Settings, load_settings
from tests.ship import kube

K8S_SECRETS = "/run/secrets/relay/"
COMPOSE_SECRETS = "/run/secrets/"


def _secret_paths(value: Any, prefix: str) -> set[str]:
    if isinstance(value, dict):
        return set().union(*(_secret_paths(v, prefix) for v in value.values()), set())
    if isinstance(value, list):
        return set().union(*(_secret_paths(v, prefix) for v in value), set())
    return {value} if isinstance(value, str) and value.startswith(prefix) else set()


def _load(config: dict[str, Any], prefix: str, tmp_path: Path) -> Settings:
    """Load the config with each secret path replaced by a temporary file holding a value."""
    text = yaml.safe_dump(config)
    for i, path in enumerate(sorted(_secret_paths(config, prefix))):
        local = tmp_path / f"secret-{i}"
        local.write_text(f"value-{i}-{Path(path).name}\n")
        text = text.replace(path, str(local))
    file = tmp_path / "config.yaml"
    file.write_text(text)
    return load_settings(file)


def _config_map(tree: kube.Tree, folder: Path) -> dict[str, Any]:
    maps = [
        o
        for o in tree.applied[folder]
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("relay-config")
    ]
    assert len(maps) == 1
    loaded: dict[str, Any] = yaml.safe_load(maps[0]["data"]["config.yaml"])
    return loaded


@pytest.mark.parametrize("folder", ["base", "rpi-cluster/apps/relay/app"])
def test_the_kubernetes_config_loads(
    tree: kube.Tree, folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("RELAY_")]:
        monkeypatch.delenv(name)
    config = _config_map(tree, tree.root / folder)
    settings = _load(config, K8S_SECRETS, tmp_path)
    assert settings.kubernetes is not None and settings.kubernetes.kubeconfig is None  # in-cluster
    assert {r.type for r in settings.receivers} >= {"github", "registry", "flux"}
    assert settings.deploy.secrets and settings.deploy.builder.backend == "buildkit"
    assert settings.http.host == "0.0.0.0" and settings.http.port == 8099
    if folder != "base":
        assert settings.deploy.domain == f"apps.{tree.settings['DOMAIN']}"
        assert settings.deploy.gitops.url == tree.settings["GITOPS_URL"]


def test_every_kubernetes_secret_path_is_a_key_of_the_secret(tree: kube.Tree) -> None:
    config = _config_map(tree, tree.root / "base")
    secret = next(o for o in tree.applied[tree.root / "base"] if o["kind"] == "Secret")
    keys = {p.removeprefix(K8S_SECRETS) for p in _secret_paths(config, K8S_SECRETS)}
    assert keys == set(secret["stringData"]), "config.yaml and secret.sops.yaml disagree"
    for deployment in tree.of_kind("Deployment"):
        if deployment["metadata"]["namespace"] != "relay":
            continue
        pod = deployment["spec"]["template"]["spec"]
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert mounts["secrets"] == K8S_SECRETS.rstrip("/")
        assert volumes["secrets"]["secret"]["secretName"] == secret["metadata"]["name"]
        assert mounts["config"] == "/etc/relay"
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["RELAY_CONFIG"]["value"] == "/etc/relay/config.yaml"
        assert re.fullmatch(
            r"amqp://\$\(RABBITMQ_USERNAME\):\$\(RABBITMQ_PASSWORD\)@relay-rabbitmq\..+:5672/",
            env["RELAY_BROKER__URL"]["value"],
        )


def test_the_compose_config_loads(
    repo: Path, compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("RELAY_")]:
        monkeypatch.delenv(name)
    config = yaml.safe_load((repo / "compose" / "relay" / "config.yaml").read_text())
    monkeypatch.setenv("RELAY_BROKER__URL", "amqp://relay:pw@rabbitmq:5672/")
    monkeypatch.setenv("RELAY_DEPLOY__GITOPS__URL", "http://git:8080/other.git")
    settings = _load(config, COMPOSE_SECRETS, tmp_path)
    assert settings.broker.url.startswith("amqp://")
    assert settings.deploy.gitops.url == "http://git:8080/other.git"  # the environment wins
    assert settings.deploy.registry.insecure and settings.deploy.builder.backend == "buildkit"
    assert settings.kubernetes is None  # no cluster: reconcile and watch report skipped
    services: dict[str, Any] = compose["services"]
    for name in ("gateway", "build", "commit", "reconcile", "watch", "notify"):
        provided = {f"{COMPOSE_SECRETS}{s}" for s in services[name]["secrets"]}
        assert _secret_paths(config, COMPOSE_SECRETS) <= provided, name
