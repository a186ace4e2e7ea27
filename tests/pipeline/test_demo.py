"""``relay demo`` on a machine with no cluster: it runs to its summary and says what it skipped."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_to_its_summary_without_a_cluster() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "relay.cli.main", "demo", "--timeout", "120"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "POST /hook/gh (signed GitHub push) -> 202" in out
    assert "POST /deploy (signed, app hello v1) -> 202" in out
    for key in (
        "deploy.requested",
        "image.pushed",
        "manifests.committed",
        "reconcile.completed",
        "deploy.ready",
    ):
        assert key in out
    assert "skipped: no Kubernetes configured" in out
    assert "kubernetes/rpi-cluster/apps/dynamic/hello/app/deployment.yaml" in out
    summary = out.split("== summary:", 1)[1]
    assert " ready " in summary and "url: https://hello.apps.example.com" in summary
