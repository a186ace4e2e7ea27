"""Shared fixtures of the Kubernetes tests (unit tests on the fake, and the real API server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from relay.settings import Settings


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text("s3cret-value\n")
    return path


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
    return Settings(
        broker={"url": "memory://"},
        receivers=default_receivers if receivers is None else receivers,
        deploy={"namespace": "dynamic-apps", "domain": "apps.example.com"},
        kubernetes=kubernetes,
        **extra,
    )
