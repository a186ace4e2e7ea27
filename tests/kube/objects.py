"""Kubernetes objects as the relay's GitOps manifests and the controllers make them (tests)."""

from __future__ import annotations

from typing import Any

from relay.kube.base import Obj

NAMESPACE = "dynamic-apps"
MANAGED = {"app.kubernetes.io/managed-by": "relay"}


def deployment(
    app: str,
    *,
    image: str = "127.0.0.1:5000/app:v1",
    deployment_id: str | None = None,
    replicas: int = 1,
    progress_deadline: int | None = None,
    namespace: str = NAMESPACE,
) -> Obj:
    labels = {"app.kubernetes.io/name": app, **MANAGED}
    annotations = {"relay.dev/deployment-id": deployment_id} if deployment_id else {}
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app.kubernetes.io/name": app}},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "template": {
            "metadata": {"labels": labels, "annotations": dict(annotations)},
            "spec": {
                "automountServiceAccountToken": False,
                "containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080}]}],
            },
        },
    }
    if progress_deadline is not None:
        spec["progressDeadlineSeconds"] = progress_deadline
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": app,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }


def rolling(dep: Obj, *, updated: int = 0, available: int = 0, total: int | None = None) -> Obj:
    replicas = dep["spec"].get("replicas", 1)
    return {
        "observedGeneration": dep["metadata"].get("generation", 1),
        "replicas": total if total is not None else replicas,
        "updatedReplicas": updated,
        "availableReplicas": available,
        "conditions": [
            {
                "type": "Progressing",
                "status": "True",
                "reason": "ReplicaSetUpdated",
                "message": "progressing",
            }
        ],
    }


def deadline_exceeded(dep: Obj) -> Obj:
    status = rolling(dep)
    status["conditions"] = [
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": f'ReplicaSet "{dep["metadata"]["name"]}-abc" has timed out progressing.',
        }
    ]
    return status


def replicaset(dep: Obj, *, suffix: str = "abc", revision: str = "1") -> Obj:
    app = dep["metadata"]["name"]
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{app}-{suffix}",
            "namespace": dep["metadata"]["namespace"],
            "labels": dict(dep["spec"]["template"]["metadata"]["labels"]),
            "annotations": {"deployment.kubernetes.io/revision": revision},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": app,
                    "uid": dep["metadata"].get("uid", "uid"),
                    "controller": True,
                }
            ],
        },
        "spec": {
            "replicas": 1,
            "selector": dep["spec"]["selector"],
            "template": dep["spec"]["template"],
        },
    }


def pod(rs: Obj, *, name: str | None = None) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name or f"{rs['metadata']['name']}-x1y2z",
            "namespace": rs["metadata"]["namespace"],
            "labels": dict(rs["metadata"]["labels"]),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": rs["metadata"]["name"],
                    "uid": "rs-uid",
                    "controller": True,
                }
            ],
        },
        "spec": rs["spec"]["template"]["spec"],
    }


def waiting(
    reason: str, message: str = "", *, last_terminated: str | None = None, restarts: int = 0
) -> Obj:
    """A pod status with its one container waiting for ``reason``, as the kubelet writes it."""
    status: dict[str, Any] = {
        "name": "app",
        "ready": False,
        "restartCount": restarts,
        "image": "img",
        "imageID": "",
        "started": False,
        "state": {"waiting": {"reason": reason, "message": message}},
    }
    if last_terminated:
        status["lastState"] = {
            "terminated": {
                "reason": last_terminated,
                "exitCode": 137,
                "startedAt": "2026-01-01T00:00:00Z",
                "finishedAt": "2026-01-01T00:00:01Z",
            }
        }
    return {
        "phase": "Pending" if not restarts else "Running",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [status],
    }


def running_ready() -> Obj:
    return {
        "phase": "Running",
        "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "ContainersReady", "status": "True"},
        ],
        "containerStatuses": [
            {
                "name": "app",
                "ready": True,
                "restartCount": 0,
                "image": "img",
                "imageID": "",
                "started": True,
                "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
            }
        ],
    }
