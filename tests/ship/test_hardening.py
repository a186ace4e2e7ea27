"""Security rules that hold for every workload and identity under k8s/.

Every relay Deployment: non-root, no privilege escalation, all capabilities dropped, seccomp
RuntimeDefault, read-only root filesystem with /tmp on an emptyDir, resources and probes set.
buildkitd is the one named exception (rootless BuildKit needs its user namespace): it must still
run as a non-root user with resources and probes, apart in its own namespace.
RBAC: nothing cluster-wide; the relay's Roles are exactly CONTRACT section 7.
Secrets: only in *.sops.yaml files, never with a real-looking value.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.ship import kube

EXEMPT = {"buildkitd": "rootless BuildKit: seccomp/AppArmor unconfined, setuid newuidmap"}
RELAY_COMPONENTS = {"gateway", "build", "commit", "reconcile", "watch", "notify"}


def _pod_spec(obj: kube.Obj) -> kube.Obj:
    if obj["kind"] == "CronJob":
        spec: kube.Obj = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return spec
    spec = obj["spec"]["template"]["spec"]
    return spec


def _workloads(tree: kube.Tree) -> list[kube.Obj]:
    seen = {}
    for _, obj in tree.objects():
        if obj["kind"] in ("Deployment", "CronJob"):
            seen[kube.describe(obj)] = obj
    return list(seen.values())


def test_every_relay_component_has_a_deployment(tree: kube.Tree) -> None:
    components = {
        d["metadata"]["labels"].get("app.kubernetes.io/component")
        for d in tree.of_kind("Deployment")
        if d["metadata"]["namespace"] == "relay"
    }
    assert components == RELAY_COMPONENTS


def test_every_container_is_locked_down(tree: kube.Tree) -> None:
    workloads = _workloads(tree)
    assert len(workloads) >= 8
    for obj in workloads:
        pod = _pod_spec(obj)
        name = kube.describe(obj)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"].get("runAsUser", 1) != 0, name
        for c in pod["containers"]:
            assert c["resources"]["requests"] and c["resources"]["limits"], name
            assert c["securityContext"].get("privileged") is not True, name
            if obj["metadata"]["name"] in EXEMPT:
                continue
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert not sc["capabilities"].get("add"), name
            assert sc["readOnlyRootFilesystem"] is True, name
            seccomp = sc.get("seccompProfile") or pod["securityContext"].get("seccompProfile")
            assert seccomp == {"type": "RuntimeDefault"}, name
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp must be an emptyDir"


def test_every_deployment_has_probes(tree: kube.Tree) -> None:
    for obj in tree.of_kind("Deployment"):
        for c in _pod_spec(obj)["containers"]:
            assert c.get("livenessProbe") and c.get("readinessProbe"), kube.describe(obj)


def test_the_exception_lives_apart(tree: kube.Tree) -> None:
    for obj in tree.of_kind("Deployment"):
        if obj["metadata"]["name"] in EXEMPT:
            assert obj["metadata"]["namespace"] == "relay-buildkit"
            assert _pod_spec(obj)["automountServiceAccountToken"] is False
    policies = [
        p for p in tree.of_kind("NetworkPolicy") if p["metadata"]["namespace"] == "relay-buildkit"
    ]
    assert policies and all(p["spec"]["podSelector"] == {} for p in policies)
    sources = [f for p in policies for rule in p["spec"]["ingress"] for f in rule["from"]]
    assert all(
        f["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "build" for f in sources
    )


def test_only_reconcile_and_watch_hold_an_api_token(tree: kube.Tree) -> None:
    for obj in tree.of_kind("Deployment"):
        if obj["metadata"]["namespace"] != "relay":
            continue
        component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
        pod = _pod_spec(obj)
        assert pod["automountServiceAccountToken"] is (component in {"reconcile", "watch"})


def test_nothing_cluster_wide(tree: kube.Tree) -> None:
    assert not tree.of_kind("ClusterRole") and not tree.of_kind("ClusterRoleBinding")


def test_the_relay_roles_are_exactly_the_contract(tree: kube.Tree) -> None:
    roles = {
        r["metadata"]["namespace"]: r["rules"]
        for r in tree.of_kind("Role")
        if r["metadata"]["name"] == "relay"
    }
    flux = {
        (g, res): set(rule["verbs"])
        for rule in roles["flux-system"]
        for g in rule["apiGroups"]
        for res in rule["resources"]
    }
    assert flux == {
        ("source.toolkit.fluxcd.io", "gitrepositories"): {"get", "list", "watch", "patch"},
        ("kustomize.toolkit.fluxcd.io", "kustomizations"): {"get", "list", "watch", "patch"},
    }
    apps = {
        (g, res): set(rule["verbs"])
        for rule in roles["dynamic-apps"]
        for g in rule["apiGroups"]
        for res in rule["resources"]
    }
    read = {"get", "list", "watch"}
    assert apps == {
        ("apps", "deployments"): read,
        ("apps", "replicasets"): read,
        ("", "pods"): read,
        ("", "events"): read,
    }
    for binding in tree.of_kind("RoleBinding"):
        if binding["metadata"]["name"] == "relay":
            assert binding["subjects"] == [
                {"kind": "ServiceAccount", "name": "relay", "namespace": "relay"}
            ]


def test_no_role_writes_beyond_its_namespace_object(tree: kube.Tree) -> None:
    writes = {"create", "update", "patch", "delete", "deletecollection", "*"}
    for role in tree.of_kind("Role"):
        for rule in role["rules"]:
            assert "*" not in rule["resources"] and "*" not in rule["apiGroups"]
            if writes & set(rule["verbs"]) and rule["resources"] != ["pods/exec"]:
                assert rule.get("resourceNames") or role["metadata"]["name"] == "relay", (
                    kube.describe(role)
                )


def test_secrets_are_sops_templates_with_no_real_value(repo: Path) -> None:
    found = 0
    for path in sorted((repo / "k8s").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "Secret":
                continue
            found += 1
            assert path.name.endswith(".sops.yaml"), f"{path}: a Secret outside a *.sops.yaml file"
            for key, value in (doc.get("stringData") or {}).items():
                assert value == "" or "REPLACE" in value, f"{path}: {key} looks like a real secret"
            assert not doc.get("data"), f"{path}: use stringData placeholders"
    assert found >= 5
    rules = yaml.safe_load((repo / "k8s" / ".sops.yaml").read_text())["creation_rules"]
    assert rules[0]["encrypted_regex"] == "^(data|stringData)$"


def test_the_public_route_hides_metrics_and_health(tree: kube.Tree) -> None:
    for route in tree.of_kind("HTTPRoute"):
        paths = [m["path"]["value"] for rule in route["spec"]["rules"] for m in rule["matches"]]
        assert "/hook/" in paths and "/deploy" in paths
        assert not any(p in ("/", "/metrics", "/healthz", "/readyz") for p in paths)


def test_the_gateway_survives_a_drain(tree: kube.Tree) -> None:
    gateway = next(
        d for d in tree.of_kind("Deployment") if d["metadata"]["name"] == "relay-gateway"
    )
    pdb = next(
        p for p in tree.of_kind("PodDisruptionBudget") if p["metadata"]["name"] == "relay-gateway"
    )
    assert gateway["spec"]["replicas"] > pdb["spec"]["minAvailable"] >= 1
    assert pdb["spec"]["selector"]["matchLabels"] == gateway["spec"]["selector"]["matchLabels"]


def test_every_probed_port_is_one_the_process_listens_on(tree: kube.Tree) -> None:
    """The gateway listens on http.port; a worker only on http.metrics_port (unset: no listener)."""
    for obj in tree.of_kind("Deployment"):
        if obj["metadata"]["namespace"] != "relay":
            continue
        container = _pod_spec(obj)["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        listens = (
            env["RELAY_HTTP__PORT"]
            if container["args"][0] == "gateway"
            else env.get("RELAY_HTTP__METRICS_PORT")
        )
        (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "http"]
        assert listens == str(port), kube.describe(obj)
        assert env["RELAY_HTTP__HOST"] == "0.0.0.0"
