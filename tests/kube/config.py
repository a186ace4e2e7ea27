"""Settings as the acceptance suite writes them, for the Kubernetes tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from relay.settings import Settings


def make_settings(
    secret_file: Path,
    *,
    kubernetes: dict[str, Any] | None = None,
    receivers: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> Settings:
    """Settings as the acceptance suite writes them, with ``kubernetes`` filled in."""
    default_receivers = [
        {
            "name": "gh",
            "type": "github",
            "secret_file": str(secret_file),
            "reconcile": [
                {"kind": "GitRepository", "name": "flux-system", "namespace": "flux-system"}
            ],
        }
    ]
    values: dict[str, Any] = {
        "broker": {"url": "memory://"},
        "receivers": default_receivers if receivers is None else receivers,
        "deploy": {"namespace": "dynamic-apps", "domain": "apps.example.com"},
        "kubernetes": kubernetes,
        **extra,
    }
    return Settings(**values)
