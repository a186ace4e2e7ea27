"""Schemas for every kind k8s/ uses, found by apiVersion and kind.

- Core Kubernetes kinds: ``kubernetes-validate`` (Kubernetes 1.32, strict: unknown fields fail).
- Kinds with a CRD in ``shared/crds/`` (Flux Kustomization and GitRepository, Gateway API
  HTTPRoute): that CRD's ``openAPIV3Schema`` for the object's version, made strict the way
  ``kubectl --validate=strict`` is: an object schema that lists properties and does not preserve
  unknown fields refuses any other field.
- Kinds with no CRD file there (HelmRelease, HelmRepository, RabbitmqCluster, PodMonitor,
  PrometheusRule, Receiver, Provider, Alert): the hand-written ``PARTIAL`` schemas below. They
  check apiVersion, kind and metadata, and every spec field these manifests use, as documented in
  each project's API reference (Flux: fluxcd.io/flux/components/*/api; RabbitMQ Cluster Operator:
  rabbitmq.com/kubernetes/operator/using-operator; Prometheus Operator: its API reference). Spec
  objects are closed (additionalProperties: false), so a misspelt field fails; they are not the
  full schemas, so a valid field these manifests do not use would fail too and must be added here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

Schema = dict[str, Any]


def strict(schema: Any) -> Any:
    """The CRD schema with additionalProperties: false wherever it lists properties."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    closed = (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    )
    if closed:
        out["additionalProperties"] = False
    return out


def crd_schemas(crds: Path) -> dict[tuple[str, str], Schema]:
    """(apiVersion, kind) -> strict schema, for every served version of every CRD file."""
    found: dict[tuple[str, str], Schema] = {}
    for path in sorted(crds.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = strict(version["schema"]["openAPIV3Schema"])
                found[(f"{group}/{version['name']}", kind)] = schema
    return found


def _obj(properties: Schema, required: list[str] | None = None) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": required or [],
        "additionalProperties": False,
    }


STRING: Schema = {"type": "string", "minLength": 1}
INT: Schema = {"type": "integer"}
BOOL: Schema = {"type": "boolean"}
DURATION: Schema = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"}
ANY_OBJECT: Schema = {"type": "object"}
NAME_REF: Schema = _obj({"name": STRING}, ["name"])
CROSS_REF: Schema = _obj({"kind": STRING, "name": STRING, "namespace": STRING}, ["kind", "name"])
RESOURCES: Schema = _obj({"requests": ANY_OBJECT, "limits": ANY_OBJECT})
METADATA: Schema = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["name", "namespace"],
    "additionalProperties": False,
}


def _kind(api_version: str, kind: str, spec: Schema) -> Schema:
    return _obj(
        {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
        ["apiVersion", "kind", "metadata", "spec"],
    )


REMEDIATION = _obj(
    {"crds": {"enum": ["Skip", "Create", "CreateReplace"]}, "remediation": _obj({"retries": INT})}
)
VALUES_REF = _obj(
    {
        "kind": {"enum": ["Secret", "ConfigMap"]},
        "name": STRING,
        "valuesKey": STRING,
        "targetPath": STRING,
        "optional": BOOL,
    },
    ["kind", "name"],
)
HELM_RELEASE = _obj(
    {
        "interval": DURATION,
        "chart": _obj(
            {
                "spec": _obj(
                    {
                        "chart": STRING,
                        "version": {"type": "string", "pattern": r"^[0-9]+\.[0-9]+\.[0-9]+$"},
                        "sourceRef": CROSS_REF,
                        "interval": DURATION,
                    },
                    ["chart", "version", "sourceRef"],
                )
            },
            ["spec"],
        ),
        "install": REMEDIATION,
        "upgrade": REMEDIATION,
        "valuesFrom": {"type": "array", "items": VALUES_REF},
        "values": ANY_OBJECT,
    },
    ["interval", "chart"],
)
HELM_REPOSITORY = _obj(
    {"type": {"enum": ["default", "oci"]}, "interval": DURATION, "url": STRING},
    ["interval", "url"],
)
RABBITMQ_CLUSTER = _obj(
    {
        "replicas": {"type": "integer", "minimum": 0},
        "image": STRING,
        "resources": RESOURCES,
        "persistence": _obj({"storageClassName": STRING, "storage": STRING}),
        "rabbitmq": _obj(
            {
                "additionalPlugins": {"type": "array", "items": STRING},
                "additionalConfig": {"type": "string"},
            }
        ),
        "terminationGracePeriodSeconds": INT,
    }
)
POD_MONITOR = _obj(
    {
        "selector": _obj({"matchLabels": ANY_OBJECT}),
        "podMetricsEndpoints": {
            "type": "array",
            "minItems": 1,
            "items": _obj({"port": STRING, "path": STRING, "interval": DURATION}, ["port"]),
        },
    },
    ["selector", "podMetricsEndpoints"],
)
RULE = _obj(
    {
        "alert": STRING,
        "expr": STRING,
        "for": DURATION,
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    ["alert", "expr"],
)
PROMETHEUS_RULE = _obj(
    {
        "groups": {
            "type": "array",
            "minItems": 1,
            "items": _obj({"name": STRING, "rules": {"type": "array", "items": RULE}}, ["name"]),
        }
    },
    ["groups"],
)
RECEIVER = _obj(
    {
        "type": {
            "enum": [
                "generic",
                "generic-hmac",
                "github",
                "gitlab",
                "bitbucket",
                "harbor",
                "dockerhub",
                "quay",
                "gcr",
                "nexus",
                "acr",
                "cdevents",
            ]
        },
        "events": {"type": "array", "items": STRING},
        "secretRef": NAME_REF,
        "resources": {
            "type": "array",
            "minItems": 1,
            "items": _obj({"apiVersion": STRING, "kind": STRING, "name": STRING}, ["kind", "name"]),
        },
    },
    ["type", "resources", "secretRef"],
)
PROVIDER = _obj(
    {
        "type": {"enum": ["generic", "generic-hmac", "slack", "discord", "github", "gitlab"]},
        "address": {"type": "string", "pattern": "^https?://"},
        "secretRef": NAME_REF,
    },
    ["type"],
)
ALERT = _obj(
    {
        "providerRef": NAME_REF,
        "eventSeverity": {"enum": ["info", "error"]},
        "eventSources": {"type": "array", "minItems": 1, "items": CROSS_REF},
    },
    ["providerRef", "eventSources"],
)

PARTIAL: dict[tuple[str, str], Schema] = {
    ("helm.toolkit.fluxcd.io/v2", "HelmRelease"): _kind(
        "helm.toolkit.fluxcd.io/v2", "HelmRelease", HELM_RELEASE
    ),
    ("source.toolkit.fluxcd.io/v1", "HelmRepository"): _kind(
        "source.toolkit.fluxcd.io/v1", "HelmRepository", HELM_REPOSITORY
    ),
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): _kind(
        "rabbitmq.com/v1beta1", "RabbitmqCluster", RABBITMQ_CLUSTER
    ),
    ("monitoring.coreos.com/v1", "PodMonitor"): _kind(
        "monitoring.coreos.com/v1", "PodMonitor", POD_MONITOR
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _kind(
        "monitoring.coreos.com/v1", "PrometheusRule", PROMETHEUS_RULE
    ),
    ("notification.toolkit.fluxcd.io/v1", "Receiver"): _kind(
        "notification.toolkit.fluxcd.io/v1", "Receiver", RECEIVER
    ),
    ("notification.toolkit.fluxcd.io/v1beta3", "Provider"): _kind(
        "notification.toolkit.fluxcd.io/v1beta3", "Provider", PROVIDER
    ),
    ("notification.toolkit.fluxcd.io/v1beta3", "Alert"): _kind(
        "notification.toolkit.fluxcd.io/v1beta3", "Alert", ALERT
    ),
}
