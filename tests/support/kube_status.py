"""Status shapes the Kubernetes and Flux controllers write, for stand-ins that play them (the
tests' fake Flux and fake deployment controller, and chaos.flux)."""

from __future__ import annotations

from datetime import UTC, datetime

from relay.kube.base import Obj, meta


def now() -> str:
    """A Kubernetes timestamp (RFC 3339, seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(kind: str, status: str, reason: str, message: str, generation: int) -> Obj:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": now(),
    }


def rolled_out(deployment: Obj, *, generation: int | None = None) -> Obj:
    """The status the deployment controller writes once every replica is available."""
    replicas = int((deployment.get("spec") or {}).get("replicas", 1))
    name = meta(deployment).get("name")
    return {
        "observedGeneration": generation or int(meta(deployment).get("generation") or 1),
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {
                "type": "Available",
                "status": "True",
                "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable",
                "message": f'ReplicaSet "{name}-abc" has successfully progressed.',
            },
        ],
    }
