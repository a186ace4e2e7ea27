"""Render an app's manifests for the GitOps repository (CONTRACT section 6), byte for byte stable.

Pure functions from an ``AppSpec`` and the deploy settings to file contents: no clock, no
randomness, dictionaries built in one fixed order and dumped with PyYAML's ``safe_dump``, so the
same input always gives the same bytes and an unchanged deploy makes no commit. The request time
is written into the Deployment (``relay.dev/requested-at``) so that a later writer can tell an
older request from a newer one by reading the tree alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from relay.settings import DeploySettings, ResourceSettings

DEPLOYMENT_ID = "relay.dev/deployment-id"
REQUESTED_AT = "relay.dev/requested-at"
MANAGED_BY = "relay"
KUSTOMIZE_API = "kustomize.config.k8s.io/v1beta1"
FLUX_KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"
GATEWAY_API = "gateway.networking.k8s.io/v1"
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]")
_LABEL_MAX = 63

Manifest = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Resources:
    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str


@dataclass(frozen=True, kw_only=True)
class AppSpec:
    """Everything one app's manifests depend on (and nothing else)."""

    app: str
    version: str
    image: str
    deployment_id: str
    requested_at: datetime
    port: int = 8080
    replicas: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    health_path: str | None = None
    resources: Resources | None = None


def format_time(value: datetime) -> str:
    """UTC, microseconds, ``Z``: one spelling per instant, so files compare byte for byte."""
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# libyaml's emitter when PyYAML was built with it (same bytes, about 4x faster on a batch), and
# its parser for reading what is in the tree (the pure-Python one took most of a batch's time).
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(text: bytes) -> Any:
    """``yaml.safe_load`` through libyaml when it is there (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader


def dump(obj: Manifest) -> bytes:
    text = yaml.dump(
        obj,
        Dumper=_DUMPER,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=4096,
    )
    return text.encode("utf-8")


def label_value(text: str) -> str:
    """A Kubernetes label value: at most 63 of [A-Za-z0-9_.-], alphanumeric at both ends."""
    cleaned = _LABEL_VALUE.sub("-", text)[:_LABEL_MAX]
    return cleaned.strip("_.-")


def labels(spec: AppSpec, settings: DeploySettings) -> dict[str, str]:
    found = {
        "app.kubernetes.io/name": spec.app,
        "app.kubernetes.io/instance": spec.app,
        "app.kubernetes.io/version": label_value(spec.version),
        "app.kubernetes.io/part-of": label_value(settings.namespace),
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    return {k: v for k, v in found.items() if v}


def selector(spec: AppSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": spec.app, "app.kubernetes.io/instance": spec.app}


def _meta(spec: AppSpec, settings: DeploySettings, namespace: str | None = None) -> Manifest:
    return {
        "name": spec.app,
        "namespace": namespace or settings.namespace,
        "labels": labels(spec, settings),
    }


def effective_resources(spec: AppSpec, defaults: ResourceSettings) -> Resources:
    return spec.resources or Resources(
        cpu_request=defaults.cpu_request,
        memory_request=defaults.memory_request,
        cpu_limit=defaults.cpu_limit,
        memory_limit=defaults.memory_limit,
    )


def _probe(spec: AppSpec, *, initial: int, period: int) -> Manifest:
    action: Manifest = (
        {"httpGet": {"path": spec.health_path, "port": "http"}}
        if spec.health_path
        else {"tcpSocket": {"port": "http"}}
    )
    return {
        **action,
        "initialDelaySeconds": initial,
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": 3,
    }


def _container_security(settings: DeploySettings) -> Manifest:
    found: Manifest = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "runAsNonRoot": True,
    }
    if settings.manifests.read_only_root_filesystem:
        found["readOnlyRootFilesystem"] = True
    return found


def _pod_security(settings: DeploySettings) -> Manifest:
    found: Manifest = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    uid = settings.manifests.run_as_user
    if uid is not None:
        found.update({"runAsUser": uid, "runAsGroup": uid, "fsGroup": uid})
    return found


def _container(spec: AppSpec, settings: DeploySettings) -> Manifest:
    res = effective_resources(spec, settings.manifests.resources)
    container: Manifest = {
        "name": spec.app,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
    }
    if spec.env:
        container["env"] = [{"name": k, "value": spec.env[k]} for k in sorted(spec.env)]
    container.update(
        {
            "resources": {
                "requests": {"cpu": res.cpu_request, "memory": res.memory_request},
                "limits": {"cpu": res.cpu_limit, "memory": res.memory_limit},
            },
            "readinessProbe": _probe(spec, initial=2, period=5),
            "livenessProbe": _probe(spec, initial=10, period=10),
            "securityContext": _container_security(settings),
        }
    )
    if settings.manifests.read_only_root_filesystem:
        # A writable /tmp inside the container (an emptyDir), not a file on this machine.
        container["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108
    return container


def deployment(spec: AppSpec, settings: DeploySettings) -> Manifest:
    meta = _meta(spec, settings)
    meta["annotations"] = {
        DEPLOYMENT_ID: spec.deployment_id,
        REQUESTED_AT: format_time(spec.requested_at),
    }
    pod: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": _pod_security(settings),
        "containers": [_container(spec, settings)],
    }
    if settings.manifests.read_only_root_filesystem:
        pod["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": spec.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector(spec)},
            "template": {"metadata": {"labels": labels(spec, settings)}, "spec": pod},
        },
    }


def service(spec: AppSpec, settings: DeploySettings) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, settings),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(spec),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def httproute(spec: AppSpec, settings: DeploySettings) -> Manifest:
    m = settings.manifests
    return {
        "apiVersion": GATEWAY_API,
        "kind": "HTTPRoute",
        "metadata": _meta(spec, settings),
        "spec": {
            "parentRefs": [{"name": m.gateway_name, "namespace": m.gateway_namespace}],
            "hostnames": [f"{spec.app}.{settings.domain}"],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [{"name": spec.app, "port": 80}],
                }
            ],
        },
    }


def network_policy(spec: AppSpec, settings: DeploySettings) -> Manifest:
    """Ingress only from the gateway's namespace, to the app's port; egress left open."""
    gateway_ns = settings.manifests.gateway_namespace
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(spec, settings),
        "spec": {
            "podSelector": {"matchLabels": selector(spec)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": gateway_ns}
                            }
                        }
                    ],
                    "ports": [{"port": spec.port, "protocol": "TCP"}],
                }
            ],
        },
    }


def kustomization(resources: list[str]) -> Manifest:
    return {"apiVersion": KUSTOMIZE_API, "kind": "Kustomization", "resources": resources}


def flux_kustomization(spec: AppSpec, settings: DeploySettings) -> Manifest:
    g, m = settings.gitops, settings.manifests
    meta = _meta(spec, settings, namespace="flux-system")
    meta["labels"] = {
        "app.kubernetes.io/name": spec.app,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    return {
        "apiVersion": FLUX_KUSTOMIZE_API,
        "kind": "Kustomization",
        "metadata": meta,
        "spec": {
            "interval": m.kustomization_interval,
            "path": f"./{g.path.strip('/')}/{spec.app}/app",
            "prune": True,
            "wait": True,
            "timeout": m.kustomization_timeout,
            "targetNamespace": settings.namespace,
            "sourceRef": {
                "kind": "GitRepository",
                "name": g.source_name,
                "namespace": g.source_namespace,
            },
        },
    }


def render_app(spec: AppSpec, settings: DeploySettings) -> dict[str, bytes]:
    """The app's files, keyed by their path inside ``<path>/<app>/``."""
    objects = {
        "deployment.yaml": deployment(spec, settings),
        "service.yaml": service(spec, settings),
        "httproute.yaml": httproute(spec, settings),
    }
    if settings.manifests.network_policy:
        objects["networkpolicy.yaml"] = network_policy(spec, settings)
    files = {f"app/{name}": dump(obj) for name, obj in objects.items()}
    files["app/kustomization.yaml"] = dump(kustomization(list(objects)))
    files["ks.yaml"] = dump(flux_kustomization(spec, settings))
    return dict(sorted(files.items()))


def render_parent(app_entries: list[str], extra: list[str] | None = None) -> bytes:
    """``<path>/kustomization.yaml``: every app's ``./<app>/ks.yaml`` (and kept foreign
    entries), sorted and without duplicates."""
    entries = {f"./{app}/ks.yaml" for app in app_entries} | set(extra or [])
    return dump(kustomization(sorted(entries)))


def read_requested_at(deployment_yaml: bytes) -> datetime | None:
    """The request time recorded in a Deployment written by the relay, if it has one."""
    try:
        obj = load(deployment_yaml)
    except yaml.YAMLError:
        return None
    annotations = (obj or {}).get("metadata", {}).get("annotations") or {}
    raw = annotations.get(REQUESTED_AT) if isinstance(annotations, dict) else None
    return parse_time(raw) if isinstance(raw, str) else None
