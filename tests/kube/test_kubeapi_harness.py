"""The test Kubernetes API server behaves as the relay needs a cluster to behave.

Least privilege for the `relay` user (CONTRACT.md section 7), Flux's reconcile annotation as a
JSON merge patch, 410 Gone on a watch from a compacted resourceVersion, API server restarts,
and the optional controller manager.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import subprocess
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.kubeapi import KubeAPIServer

FLUX_NS, APPS_NS = "flux-system", "dynamic-apps"
GITREPOS = f"/apis/source.toolkit.fluxcd.io/v1/namespaces/{FLUX_NS}/gitrepositories"
KUSTOMIZATIONS = f"/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/{FLUX_NS}/kustomizations"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{APPS_NS}/deployments"
MERGE_PATCH = "application/merge-patch+json"
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def git_repository(name: str, namespace: str = FLUX_NS) -> dict[str, Any]:
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"url": "http://127.0.0.1:8418/homelab.git", "interval": "10m", "ref": {"branch": "main"}},
    }


def kustomization(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": FLUX_NS},
        "spec": {
            "interval": "10m",
            "path": "./apps",
            "prune": True,
            "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
        },
    }


def deployment(name: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": APPS_NS, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "127.0.0.1:5000/demo:v1"}]},
            },
        },
    }


def annotation_patch() -> dict[str, Any]:
    stamp = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return {"metadata": {"annotations": {REQUESTED_AT: stamp}}}


@pytest.mark.parametrize(
    ("collection", "make"),
    [(GITREPOS, git_repository), (KUSTOMIZATIONS, kustomization)],
    ids=["gitrepository", "kustomization"],
)
def test_relay_merge_patches_reconcile_annotation(kube_api: KubeAPIServer, collection: str, make: Any) -> None:
    created = kube_api.create(make(unique("obj")))
    url = f"{collection}/{created['metadata']['name']}"
    patch = annotation_patch()

    status, patched = kube_api.request("PATCH", url, token=kube_api.relay_token, body=patch, content_type=MERGE_PATCH)

    assert status == 200, patched
    assert patched["metadata"]["annotations"][REQUESTED_AT] == patch["metadata"]["annotations"][REQUESTED_AT]
    assert patched["metadata"]["generation"] == created["metadata"]["generation"]
    assert patched["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    assert kube_api.request("GET", url, token=kube_api.relay_token)[0] == 200


def test_relay_reads_rollout_objects_in_apps_namespace(kube_api: KubeAPIServer) -> None:
    for path in (
        DEPLOYMENTS,
        f"/apis/apps/v1/namespaces/{APPS_NS}/replicasets",
        f"/api/v1/namespaces/{APPS_NS}/pods",
        f"/api/v1/namespaces/{APPS_NS}/events",
        f"/api/v1/namespaces/{APPS_NS}/pods?watch=1&timeoutSeconds=1",
    ):
        status, body = kube_api.request("GET", path, token=kube_api.relay_token)
        assert status == 200, (path, body)


def test_relay_cannot_patch_deployment(kube_api: KubeAPIServer) -> None:
    name = kube_api.create(deployment(unique("app")))["metadata"]["name"]
    url = f"{DEPLOYMENTS}/{name}"

    status, body = kube_api.request(
        "PATCH", url, token=kube_api.relay_token, body={"spec": {"replicas": 3}}, content_type=MERGE_PATCH
    )
    assert status == 403, body
    status, body = kube_api.request(
        "PATCH", f"{url}/status", token=kube_api.relay_token, body={"status": {"replicas": 3}}, content_type=MERGE_PATCH
    )
    assert status == 403, body
    assert kube_api.request("DELETE", url, token=kube_api.relay_token)[0] == 403
    assert kube_api.request("GET", url, token=kube_api.relay_token)[0] == 200


def test_relay_cannot_touch_default_namespace(kube_api: KubeAPIServer) -> None:
    name = unique("cm")
    kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"},
            "data": {"k": "v"},
        }
    )
    relay = kube_api.relay_token
    assert kube_api.request("GET", f"/api/v1/namespaces/default/configmaps/{name}", token=relay)[0] == 403
    status, _ = kube_api.request(
        "PATCH",
        f"/api/v1/namespaces/default/configmaps/{name}",
        token=relay,
        body={"data": {"k": "x"}},
        content_type=MERGE_PATCH,
    )
    assert status == 403
    for path in (
        "/apis/source.toolkit.fluxcd.io/v1/namespaces/default/gitrepositories",
        "/apis/apps/v1/namespaces/default/deployments",
        "/api/v1/namespaces/default/pods",
    ):
        assert kube_api.request("GET", path, token=relay)[0] == 403, path
    status, _ = kube_api.request(
        "PATCH",
        "/apis/source.toolkit.fluxcd.io/v1/namespaces/default/gitrepositories/x",
        token=relay,
        body=annotation_patch(),
        content_type=MERGE_PATCH,
    )
    assert status == 403


def test_relay_cannot_create_delete_or_write_status_of_flux_objects(kube_api: KubeAPIServer) -> None:
    relay = kube_api.relay_token
    status, _ = kube_api.request("POST", GITREPOS, token=relay, body=git_repository(unique("repo")))
    assert status == 403
    name = kube_api.create(git_repository(unique("repo")))["metadata"]["name"]
    assert kube_api.request("DELETE", f"{GITREPOS}/{name}", token=relay)[0] == 403
    status, _ = kube_api.request(
        "PATCH",
        f"{GITREPOS}/{name}/status",
        token=relay,
        body={"status": {"observedGeneration": 1}},
        content_type=MERGE_PATCH,
    )
    assert status == 403
    status, body = kube_api.request("GET", "/api/v1/namespaces", token=relay)
    assert status == 403, body


def test_kubeconfigs_work_with_kubectl(kube_api: KubeAPIServer) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed")

    def kubectl(kubeconfig: object, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True, timeout=60, check=False
        )

    assert (
        kubectl(kube_api.admin_kubeconfig, "get", "namespace", FLUX_NS, "-o", "name").stdout.strip()
        == f"namespace/{FLUX_NS}"
    )
    can = kubectl(
        kube_api.relay_kubeconfig, "auth", "can-i", "patch", "gitrepositories.source.toolkit.fluxcd.io", "-n", FLUX_NS
    )
    assert can.stdout.strip() == "yes", can.stderr
    cannot = kubectl(kube_api.relay_kubeconfig, "auth", "can-i", "patch", "deployments.apps", "-n", APPS_NS)
    assert cannot.stdout.strip() == "no", cannot.stderr
    listed = kubectl(kube_api.relay_kubeconfig, "get", "gitrepositories.source.toolkit.fluxcd.io", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["kind"] == "List"


def first_watch_event(
    kube_api: KubeAPIServer, path: str, resource_version: str, timeout_s: int = 5
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, first watch event or error body) of a watch from `resource_version`;
    {} when the server closed the watch after `timeout_s` without an event."""
    query = f"?watch=1&resourceVersion={resource_version}&timeoutSeconds={timeout_s}"
    with kube_api.open("GET", path + query, token=kube_api.relay_token) as response:
        line = response.readline() if response.status == 200 else response.read()
        return response.status, json.loads(line) if line else {}


def is_gone(status: int, event: dict[str, Any]) -> bool:
    """410 as a status, or (how 1.20 reports it) as an ERROR event in a 200 stream."""
    if status == 410:
        return True
    return event.get("type") == "ERROR" and event.get("object", {}).get("code") == 410


def test_watch_from_compacted_resource_version_gets_410(kube_api: KubeAPIServer) -> None:
    created = kube_api.create(git_repository(unique("watched")))
    name, old_rv = created["metadata"]["name"], created["metadata"]["resourceVersion"]
    kube_api.request("PATCH", f"{GITREPOS}/{name}", body=annotation_patch(), content_type=MERGE_PATCH)

    status, event = first_watch_event(kube_api, GITREPOS, old_rv)
    assert status == 200 and event["type"] == "MODIFIED", event  # replayable before compaction

    revision = kube_api.compact_etcd()
    assert revision > int(old_rv)

    status, event = first_watch_event(kube_api, GITREPOS, old_rv)
    assert is_gone(status, event), (status, event)
    status, listed = kube_api.request("GET", GITREPOS, token=kube_api.relay_token)
    assert status == 200
    status, event = first_watch_event(kube_api, GITREPOS, listed["metadata"]["resourceVersion"], timeout_s=1)
    assert status == 200 and not is_gone(status, event), event  # a fresh list's resourceVersion watches fine


def test_apiserver_stop_ends_watches_and_start_keeps_state(kube_api: KubeAPIServer) -> None:
    name = kube_api.create(git_repository(unique("durable")))["metadata"]["name"]
    rv = kube_api.request("GET", GITREPOS)[1]["metadata"]["resourceVersion"]
    watch = kube_api.open(
        "GET", f"{GITREPOS}?watch=1&resourceVersion={rv}&timeoutSeconds=60", token=kube_api.relay_token
    )
    assert watch.status == 200

    kube_api.stop_apiserver()
    # The stream ends (EOF or a broken chunked body), never hangs.
    with watch, contextlib.suppress(OSError, http.client.HTTPException):
        assert watch.read() == b""
    assert not kube_api.apiserver_running
    with pytest.raises(OSError):
        kube_api.request("GET", "/readyz", timeout=2.0)

    kube_api.start_apiserver()
    status, body = kube_api.request("GET", f"{GITREPOS}/{name}", token=kube_api.relay_token)
    assert status == 200, body
    status, _ = kube_api.request(
        "PATCH", f"{GITREPOS}/{name}", token=kube_api.relay_token, body=annotation_patch(), content_type=MERGE_PATCH
    )
    assert status == 200


def poll(what: str, fetch: Any, timeout: float = 90.0) -> Any:
    """Call `fetch` until it returns something truthy; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = fetch()
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def test_controller_manager_rolls_deployments_into_pods(kube_api: KubeAPIServer) -> None:
    kube_api.start_controller_manager()
    try:
        name = kube_api.create(deployment(unique("rollout")))["metadata"]["name"]
        pods_url = f"/api/v1/namespaces/{APPS_NS}/pods?labelSelector=app.kubernetes.io/name%3D{name}"

        pods = poll(
            "a Pod from the ReplicaSet controller",
            lambda: kube_api.request("GET", pods_url, token=kube_api.relay_token)[1]["items"],
        )
        assert pods[0]["status"]["phase"] == "Pending"  # no scheduler, no kubelet
        assert pods[0]["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"

        def observed() -> bool:
            deploy = kube_api.request("GET", f"{DEPLOYMENTS}/{name}", token=kube_api.relay_token)[1]
            status = deploy.get("status", {})
            return bool(
                status.get("observedGeneration") == deploy["metadata"]["generation"]
                and status.get("updatedReplicas") == 1
            )

        poll("the Deployment status from the deployment controller", observed)
    finally:
        kube_api.stop_controller_manager()
