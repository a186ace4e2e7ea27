"""The relay's own identity against the real API server: the patch it sends is accepted
(path, body, content type) and it may do nothing more than CONTRACT 7 grants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from relay.kube.base import DEPLOYMENTS, GITREPOSITORIES, KUSTOMIZATIONS, PODS, Resource
from relay.kube.client import MERGE_PATCH, KubeCluster
from relay.kube.errors import Forbidden, NotFound, Unreachable
from relay.settings import KubernetesSettings
from tests.kube.objects import deployment
from tests.kube.realkube import AdminApi, relay_cluster
from tests.kube.standins import git_repository, kustomization
from tests.support.kubeapi import KubeAPIServer
from workers.reconcile.flux import REQUESTED_AT, annotation_patch, requested_at_now

pytestmark = pytest.mark.kube
RBAC_FILE = Path(__file__).resolve().parents[2] / "k8s" / "base" / "rbac.yaml"


async def test_the_requested_at_merge_patch_is_accepted_for_the_relay_user(
    kube_api: KubeAPIServer, admin: AdminApi, tag: str
) -> None:
    await admin.create(GITREPOSITORIES, git_repository(f"acc-{tag}"))
    await admin.create(KUSTOMIZATIONS, kustomization(f"acc-{tag}"))
    relay = relay_cluster(kube_api.relay_kubeconfig)  # the least-privilege user, not admin
    try:
        for resource in (GITREPOSITORIES, KUSTOMIZATIONS):
            value = requested_at_now()
            returned = await relay.patch_merge(
                resource, "flux-system", f"acc-{tag}", annotation_patch(value)
            )
            assert returned["metadata"]["annotations"][REQUESTED_AT] == value
            stored = await admin.get(resource, "flux-system", f"acc-{tag}")
            assert stored["metadata"]["annotations"][REQUESTED_AT] == value
            assert stored["metadata"]["generation"] == 1  # metadata only: Flux sees no spec change
    finally:
        await relay.close()
    assert GITREPOSITORIES.path("flux-system", "x") == (
        "/apis/source.toolkit.fluxcd.io/v1/namespaces/flux-system/gitrepositories/x"
    )


async def test_the_content_type_is_forced_to_merge_patch(admin: AdminApi, tag: str) -> None:
    """kubernetes-asyncio would choose json-patch for a dict body; the server refuses that."""
    from kubernetes_asyncio.client import ApiClient

    body = annotation_patch(requested_at_now())
    async with ApiClient() as client:
        chosen = client.select_header_content_type(
            ["application/json-patch+json", "application/merge-patch+json"], "PATCH", body
        )
    assert chosen == "application/json-patch+json"
    await admin.create(GITREPOSITORIES, git_repository(f"ct-{tag}"))
    path = GITREPOSITORIES.path("flux-system", f"ct-{tag}")
    refused = await admin.request("PATCH", path, body, content_type=chosen, ok=(400, 415, 422, 500))
    assert refused is not None
    accepted = await admin.request("PATCH", path, body, content_type=MERGE_PATCH)
    assert accepted["metadata"]["annotations"][REQUESTED_AT]


async def test_the_relay_user_may_do_nothing_more(
    kube_api: KubeAPIServer, admin: AdminApi, tag: str
) -> None:
    await admin.create(DEPLOYMENTS, deployment(f"acc-{tag}"))
    relay = relay_cluster(kube_api.relay_kubeconfig)
    try:
        assert (await relay.get(DEPLOYMENTS, "dynamic-apps", f"acc-{tag}"))["metadata"][
            "name"
        ] == f"acc-{tag}"
        await relay.list(PODS, "dynamic-apps")
        with pytest.raises(Forbidden):
            await relay.patch_merge(
                DEPLOYMENTS, "dynamic-apps", f"acc-{tag}", {"metadata": {"labels": {"x": "y"}}}
            )
        with pytest.raises(Forbidden):
            await relay.list(GITREPOSITORIES, "default")
        with pytest.raises(Forbidden):
            await relay.list(DEPLOYMENTS, "flux-system")
        with pytest.raises(NotFound):
            await relay.get(GITREPOSITORIES, "flux-system", f"missing-{tag}")
    finally:
        await relay.close()


async def test_connection_failures_and_bad_credentials_are_named(
    kube_api: KubeAPIServer, tmp_path: Path
) -> None:
    config = yaml.safe_load(kube_api.relay_kubeconfig.read_text())
    config["users"][0]["user"]["token"] = "not-a-token"
    bad = tmp_path / "bad.kubeconfig"
    bad.write_text(yaml.safe_dump(config))
    cluster = KubeCluster(KubernetesSettings(kubeconfig=bad))
    with pytest.raises(Forbidden) as refused:
        await cluster.list(GITREPOSITORIES, "flux-system")
    assert refused.value.status == 401
    await cluster.close()
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    nowhere = tmp_path / "nowhere.kubeconfig"
    nowhere.write_text(yaml.safe_dump(config))
    cluster = KubeCluster(KubernetesSettings(kubeconfig=nowhere))
    with pytest.raises(Unreachable):
        await cluster.get(GITREPOSITORIES, "flux-system", "x")
    await cluster.close()


SA = "system:serviceaccount:relay:relay"
ALLOWED = (
    [
        ("flux-system", "source.toolkit.fluxcd.io", "gitrepositories", verb)
        for verb in ("get", "list", "watch", "patch")
    ]
    + [
        ("flux-system", "kustomize.toolkit.fluxcd.io", "kustomizations", verb)
        for verb in ("get", "list", "watch", "patch")
    ]
    + [
        ("dynamic-apps", group, resource, verb)
        for group, resource in (
            ("apps", "deployments"),
            ("apps", "replicasets"),
            ("", "pods"),
            ("", "events"),
        )
        for verb in ("get", "list", "watch")
    ]
)
DENIED = [
    ("flux-system", "source.toolkit.fluxcd.io", "gitrepositories", "delete"),
    ("flux-system", "kustomize.toolkit.fluxcd.io", "kustomizations", "update"),
    ("flux-system", "", "secrets", "get"),
    ("dynamic-apps", "apps", "deployments", "patch"),
    ("dynamic-apps", "", "pods", "delete"),
    ("dynamic-apps", "", "secrets", "list"),
    ("default", "source.toolkit.fluxcd.io", "gitrepositories", "patch"),
    ("default", "apps", "deployments", "list"),
]


async def test_the_rbac_manifest_grants_exactly_the_contract(admin: AdminApi) -> None:
    await admin.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "relay"}},
        ok=(201, 409),
    )
    for obj in yaml.safe_load_all(RBAC_FILE.read_text()):
        target = _resource_of(obj)
        await admin.request("POST", target.path(obj["metadata"]["namespace"]), obj, ok=(201, 409))
    for namespace, group, resource, verb in ALLOWED + DENIED:
        review = await admin.request(
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": SA,
                    "groups": [
                        "system:serviceaccounts",
                        "system:serviceaccounts:relay",
                        "system:authenticated",
                    ],
                    "resourceAttributes": {
                        "namespace": namespace,
                        "group": group,
                        "resource": resource,
                        "verb": verb,
                    },
                },
            },
        )
        expected = (namespace, group, resource, verb) in ALLOWED
        assert review["status"].get("allowed", False) is expected, (namespace, resource, verb)


def _resource_of(obj: dict[str, Any]) -> Resource:
    kind = obj["kind"]
    if kind == "ServiceAccount":
        return Resource("", "v1", "serviceaccounts", kind)
    return Resource("rbac.authorization.k8s.io", "v1", f"{kind.lower()}s", kind)
