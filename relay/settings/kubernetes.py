"""``kubernetes``: cluster access and how the reconcile and watch workers wait on it."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from relay.settings.base import SettingsModel


class KubernetesSettings(SettingsModel):
    kubeconfig: Path | None = Field(
        default=None, description="kubeconfig file; absent: in-cluster."
    )
    context: str | None = Field(default=None, description="kubeconfig context to use.")
    flux_namespace: str = Field(default="flux-system", description="Where Flux objects live.")
    rollout_deadline: float = Field(default=300.0, description="Seconds a rollout may take.")
    reconcile_timeout: float = Field(default=300.0, description="Seconds Flux may take to apply.")
    coalesce_ms: int = Field(
        default=500, description="Pushes to one target within this → one patch."
    )
    keepalive_s: float = Field(
        default=30.0,
        ge=0,
        description="Seconds without an API call after which the relay sends GET /version to "
        "keep its connection to the API server open, so that the next patch needs no new TLS "
        "handshake (6-10 ms on loopback, more under load). 0: never (idle connections then close "
        "after 15 s).",
    )
    probe_urls: bool = Field(default=False, description="Also GET the app URL before ready.")
    parent_kustomization: str | None = Field(
        default="flux-system",
        description="Flux Kustomization (in flux_namespace) that applies the apps directory and so "
        "creates and prunes each app's Kustomization; reconciled for new and deleted apps. "
        "None: wait for its own interval.",
    )
    kustomization_appear_timeout: float = Field(
        default=120.0,
        gt=0,
        description="Seconds a new app's Kustomization may take to appear after the commit.",
    )
    concurrency: int = Field(
        default=1000,
        ge=1,
        description="Deploys the reconcile and watch workers follow at once (they mostly wait).",
    )
