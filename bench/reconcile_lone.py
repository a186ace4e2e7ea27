"""A lone push: git.push → requestedAt patch seen on a watch, after the relay has been idle.

``bench.reconcile_latency`` keeps the relay busy (50 pushes a second), so its connection to the
API server never goes idle; real pushes come minutes apart. Here every contender sends one
push (or patch) after QUIET seconds without one, in turn, on a real kube-apiserver and
RabbitMQ (a private vhost), as in the latency bench:

- relay, kept warm: ``relay worker reconcile`` with ``kubernetes.keepalive_s`` = KEEPALIVE
  (shorter than QUIET, so the connection survives only through its keep-alive requests);
- relay, not kept warm: the same worker with ``keepalive_s: 0`` (aiohttp drops an idle
  connection after 15 s: the patch opens a new one, TCP and TLS);
- bare, warm and cold: the same patch straight from this process with ``KubeCluster``, with
  and without the keep-alive.

Run: ``python -m bench.reconcile_lone [SAMPLES]`` (default 10 per contender; QUIET s each).
Prints a table; nothing is written to BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import reconcile_latency as lat
from bench.reconcile_waits import kube_and_vhost
from relay.bus import Bus, connect
from relay.events import new_event
from relay.kube.base import GITREPOSITORIES
from relay.kube.client import KubeCluster
from relay.logging import configure
from relay.settings import KubernetesSettings, Settings
from tests.kube.realkube import AdminApi
from tests.kube.standins import git_repository
from tests.support.kubeapi import KubeAPIServer
from workers.reconcile.flux import annotation_patch, requested_at_now

QUIET = 20.0  # seconds each contender is idle before its push
KEEPALIVE = 5.0  # keepalive_s of the warm contenders (idle connections kept 2 x this)


@dataclass
class Relay:
    """One ``relay worker reconcile`` process and the bus its pushes go through."""

    tag: str
    bus: Bus
    worker: asyncio.subprocess.Process
    covered: dict[str, str]  # commit -> requestedAt value, from its reconcile.requested
    tap: asyncio.Task[None]

    async def send(self, i: int) -> str:
        event = lat.push(i)
        await self.bus.publish(new_event(event, source="/bench/gateway", subject="refs/heads/main"))
        return event.after

    async def stop(self) -> None:
        self.tap.cancel()
        self.worker.terminate()
        await self.worker.wait()
        await self.bus.close()


async def start_relay(
    server: KubeAPIServer, amqp: str, tmp: Path, keepalive: float, names: list[str]
) -> Relay:
    tag = uuid.uuid4().hex[:6]
    home = tmp / tag
    home.mkdir()
    secret = home / "secret"
    secret.write_text("bench-secret\n")
    config = lat.config_for(server, amqp, tag, secret)
    config["kubernetes"]["keepalive_s"] = keepalive
    for receiver, name in zip(config["receivers"], names * lat.TARGETS, strict=False):
        receiver["reconcile"] = [{"kind": "GitRepository", "name": name}]
    bus = connect(Settings.model_validate(config).broker)
    await bus.start()
    covered: dict[str, str] = {}
    tap = asyncio.create_task(_tap(bus, covered))
    worker = await lat.start_worker(config, home)
    return Relay(tag, bus, worker, covered, tap)


async def _tap(bus: Bus, covered: dict[str, str]) -> None:
    async for event in bus.tap(["reconcile.requested"]):
        value, commit = event.data.get("requested_at_value"), event.data.get("commit")
        if value and commit:
            covered[str(commit)] = str(value)


async def lone(server: KubeAPIServer, amqp: str, tmp: Path, samples: int) -> dict[str, list[float]]:
    names = [f"lone-{uuid.uuid4().hex[:6]}-{k}" for k in range(4)]
    async with AdminApi(server.url, server.admin_token, server.ca_file) as admin:
        for name in names:
            await admin.create(GITREPOSITORIES, git_repository(name))
    watcher = KubeCluster(KubernetesSettings(kubeconfig=server.admin_kubeconfig))
    arrivals = lat.Arrivals(watcher)
    await arrivals.start()
    warm = await start_relay(server, amqp, tmp, KEEPALIVE, [names[0]])
    cold = await start_relay(server, amqp, tmp, 0.0, [names[1]])
    clients = {
        "bare, kept warm": KubeCluster(
            KubernetesSettings(kubeconfig=server.relay_kubeconfig, keepalive_s=KEEPALIVE)
        ),
        "bare, not kept warm": KubeCluster(
            KubernetesSettings(kubeconfig=server.relay_kubeconfig, keepalive_s=0)
        ),
    }

    def bare(name: str, target: str) -> Any:
        async def send(_: int) -> str:
            value = requested_at_now()
            await clients[name].patch_merge(
                GITREPOSITORIES, "flux-system", target, annotation_patch(value)
            )
            return value

        return send

    contenders = {
        "relay, kept warm": warm.send,
        "relay, not kept warm": cold.send,
        "bare, kept warm": bare("bare, kept warm", names[2]),
        "bare, not kept warm": bare("bare, not kept warm", names[3]),
    }
    sent: list[tuple[str, str, float]] = []  # contender, key (commit or value), when
    try:
        for relay in (warm, cold):  # its queue exists and it reaches the API server
            await lat._until_worker_answers(relay.covered, relay.send)
        for send in contenders.values():  # connections, informers: not measured
            await send(1)
        spacing = QUIET / len(contenders)
        for k in range(samples):
            for name, send in contenders.items():
                await asyncio.sleep(spacing)
                at = time.monotonic()
                sent.append((name, await send(1000 + k), at))
        await asyncio.sleep(2.0)
    finally:
        await arrivals.stop()
        for relay in (warm, cold):
            await relay.stop()
        for client in (*clients.values(), watcher):
            await client.close()
    relays = {"relay, kept warm": warm, "relay, not kept warm": cold}
    return _latencies(list(contenders), sent, arrivals.at, relays)


def _latencies(
    names: list[str],
    sent: list[tuple[str, str, float]],
    arrived: dict[str, float],
    relays: dict[str, Relay],
) -> dict[str, list[float]]:
    """Per contender, seconds from each send to its patch arriving on the watch."""
    result: dict[str, list[float]] = {name: [] for name in names}
    for name, key, at in sent:
        value = relays[name].covered.get(key) if name in relays else key
        if value is None or value not in arrived:
            raise RuntimeError(f"{name}: push {key} never led to a patch")
        result[name].append(arrived[value] - at)
    return result


def main() -> None:
    configure(level="info", stream=open(os.devnull, "w"))  # noqa: SIM115 - the process's sink
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    load = os.getloadavg()
    with kube_and_vhost() as (server, amqp, tmp):
        result = asyncio.run(lone(server, amqp, tmp, samples))
    print(
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end; {samples} lone pushes each, {QUIET:.0f} s apart"
    )
    print("| lone push → patch seen on a watch | n | p50 ms | max ms | all ms |")
    print("|---|---:|---:|---:|---|")
    for name, values in result.items():
        ms = [v * 1000 for v in values]
        print(
            f"| {name} | {len(ms)} | {lat.pct(values, 0.5):.1f} | {max(ms):.1f} "
            f"| {' '.join(f'{v:.1f}' for v in ms)} |"
        )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
