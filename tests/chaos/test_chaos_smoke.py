"""A small ``make chaos`` scenario 1, so that CI exercises the fault-run machinery.

Twenty signed deploys (prebuilt images, one source build, one missing image) through the gateway
and every worker running as separate processes on a private vhost, a real registry and Git
server; the commit worker is SIGKILLed right after a push, before its ack, and started again.
Every invariant of the full run must hold.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.kill_workers import Kill, Options, run

pytestmark = pytest.mark.rabbitmq

SMALL = Options(
    deploys=20,
    apps=12,
    source_deploys=1,
    missing_images=1,
    rate=10.0,
    hooks=4,
    kills=(Kill("commit", 0.5, '"pushed"', "right after a push, before its ack"),),
    restart_after=0.5,
    settle_timeout=40.0,
    kubernetes=False,  # the kill machinery is what CI checks; make chaos runs it with a cluster
)


async def test_a_commit_worker_killed_after_a_push_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    result = await run(tmp_path, SMALL)
    failed = [f"{c.name}: {c.detail}" for c in result.checks if not c.ok]
    assert not failed, failed
    assert len(result.checks) >= 10
    assert result.facts["deploys accepted"] == SMALL.deploys
    assert "its log showed the moment" in result.facts["kill 1: commit"]
