"""k8s/ builds and hangs together the way Flux will apply it.

Every kustomization builds with ``kubectl kustomize`` (the Tree fixture fails otherwise); every
Flux ``ks.yaml`` points at a folder that exists; the parent folder the commit worker maintains
starts empty and builds; Flux's variable substitution has a value for every variable and would
not touch a "$" it should not (``tests/ship/kube.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.ship import kube


def test_every_kustomization_builds(tree: kube.Tree, repo: Path) -> None:
    folders = {p.parent for p in (repo / "k8s").rglob("kustomization.yaml")}
    assert folders == set(tree.raw)
    assert len(folders) >= 10


def test_every_flux_kustomization_points_at_a_folder_here(tree: kube.Tree) -> None:
    names = {ks["metadata"]["name"] for ks in tree.flux}
    assert {
        "relay",
        "relay-observability",
        "registry",
        "rabbitmq-operator",
        "dynamic-apps",
    } <= names
    for ks in tree.flux:
        folder = kube.flux_path(ks, tree.root)
        assert (folder / "kustomization.yaml").is_file(), f"{kube.describe(ks)} -> {folder}"
        assert ks["spec"]["sourceRef"] == {"kind": "GitRepository", "name": "flux-system"}
        assert ks["spec"]["prune"] is True
        for dep in ks["spec"].get("dependsOn", []):
            assert dep["name"] in names, f"{kube.describe(ks)} depends on unknown {dep['name']}"


def test_flux_decrypts_every_folder_that_holds_a_secret(tree: kube.Tree) -> None:
    for ks in tree.flux:
        objs = tree.applied[kube.flux_path(ks, tree.root)]
        if any(o["kind"] == "Secret" for o in objs):
            assert ks["spec"].get("decryption") == {
                "provider": "sops",
                "secretRef": {"name": "sops-age"},
            }, kube.describe(ks)


def test_the_relay_waits_for_what_it_needs(tree: kube.Tree) -> None:
    relay = next(ks for ks in tree.flux if ks["metadata"]["name"] == "relay")
    deps = {d["name"] for d in relay["spec"]["dependsOn"]}
    assert deps == {"rabbitmq-operator", "registry", "dynamic-apps"}
    assert relay["spec"]["wait"] is True


def test_the_rpi_cluster_lists_every_ks_yaml(repo: Path) -> None:
    for part in ("infrastructure", "apps"):
        base = repo / "k8s" / "rpi-cluster" / part
        listed = yaml.safe_load((base / "kustomization.yaml").read_text())["resources"]
        for ks in sorted(base.glob("*/ks.yaml")):
            assert f"./{ks.relative_to(base)}" in listed


def test_the_parent_of_the_generated_apps_starts_empty(tree: kube.Tree, repo: Path) -> None:
    dynamic = repo / "k8s" / "rpi-cluster" / "apps" / "dynamic"
    assert yaml.safe_load((dynamic / "kustomization.yaml").read_text())["resources"] == []
    assert tree.raw[dynamic] == []
    assert (
        "./dynamic"
        in yaml.safe_load((dynamic.parent / "kustomization.yaml").read_text())["resources"]
    )


def test_the_default_gitops_path_matches_the_tree(repo: Path) -> None:
    from relay.settings import GitOpsSettings

    path = GitOpsSettings().path
    assert path == "kubernetes/rpi-cluster/apps/dynamic"
    assert (repo / "k8s" / path.removeprefix("kubernetes/")).is_dir()


def test_every_substituted_variable_is_defined(tree: kube.Tree) -> None:
    used: set[str] = set()
    for folder, objs in tree.raw.items():
        ks = tree.ks_for(folder)
        if ks is None or not ks["spec"].get("postBuild"):
            continue
        for obj in objs:
            if not kube.substitution_disabled(obj):
                used |= set(kube.VARIABLE.findall(yaml.safe_dump(obj)))
    assert used == set(tree.settings), "cluster-settings.yaml and the variables used differ"
    for _, obj in tree.objects():
        assert "${" not in yaml.safe_dump(obj) or kube.substitution_disabled(obj)


def test_substitution_guard_catches_what_flux_would_mangle() -> None:
    values = {"DOMAIN": "example.com"}
    ok = {"kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "$(KEEP) ${DOMAIN}"}}
    assert kube.substitute(ok, values)["data"]["x"] == "$(KEEP) example.com"
    for bad in ["$2y$10$abcdef", "{{ $value }}", "${UNDEFINED}"]:
        obj = {"kind": "ConfigMap", "metadata": {"name": "b"}, "data": {"x": bad}}
        with pytest.raises(AssertionError):
            kube.substitute(obj, values)
        annotated = {**obj, "metadata": {"name": "b", "annotations": {kube.DISABLED: "disabled"}}}
        assert kube.substitute(annotated, values) == annotated


def test_secrets_in_substituted_folders_are_never_substituted(tree: kube.Tree) -> None:
    """A real secret may hold "$" (bcrypt hashes do): Flux must leave every Secret alone."""
    for folder, objs in tree.raw.items():
        ks = tree.ks_for(folder)
        if ks is None or not ks["spec"].get("postBuild"):
            continue
        for obj in objs:
            if obj["kind"] == "Secret":
                assert kube.substitution_disabled(obj), kube.describe(obj)
