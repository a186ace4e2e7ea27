"""Where a git.push's time goes on its way to the requestedAt patch: one traced run.

The set-up of ``bench.reconcile_latency`` (real kube-apiserver, RabbitMQ in a private vhost,
``relay worker reconcile`` in its own process with the least-privilege kubeconfig), with the
worker started under ``bench.stagetrace``, which notes when each event reached each stage.
Relay and bare rounds take turns as in the latency bench. Prints, per stage, p50/p90/p99/max,
and for the slowest relay pushes which stage took their time, with the GC collections and
event-loop stalls of both processes that overlapped them; and the CPU each process used per
push in relay rounds and per patch in bare rounds (read from /proc).

Run: ``python -m bench.reconcile_stages [N]`` (N events per contender at 50/s, default 1000),
or ``python -m bench.reconcile_stages lone N [KEEPALIVE_S]``: N lone pushes (and bare patches),
each after QUIET seconds of quiet, with the worker's ``kubernetes.keepalive_s`` (default 30).
A diagnostic: nothing is written to BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench import reconcile_latency as lat
from bench import stagetrace
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

TARGETS = lat.TARGETS
TICKS = os.sysconf("SC_CLK_TCK")
QUIET = 20.0  # lone pushes: seconds each contender is idle between its own
ORDER = (  # a push's stages in the order it passes them (the slowest are shown this way)
    "pub_start",
    "delivered",
    "dispatch",
    "decoded",
    "handler",
    "patch_requested",
    "patch_sent",
    "patch_headers",
    "patch_returned",
    "arrival",
)
SEGMENTS = (
    ("publish → confirmed (bench)", "pub_start", "pub_confirmed"),
    ("publish → delivered to the worker", "pub_start", "delivered"),
    ("delivered → dispatcher task runs", "delivered", "dispatch"),
    ("dispatch → decoded", "dispatch", "decoded"),
    ("decoded → handler", "decoded", "handler"),
    ("handler → patch requested (resolve, informer)", "handler", "patch_requested"),
    ("patch requested → sent (patcher)", "patch_requested", "patch_sent"),
    ("PATCH sent → response headers", "patch_sent", "patch_headers"),
    ("PATCH headers → body read, parsed", "patch_headers", "patch_returned"),
    ("PATCH sent → seen on the bench's watch", "patch_sent", "arrival"),
    ("PATCH sent → seen by the worker's informer", "patch_sent", "informed"),
    ("patch returned → reconcile.requested publish", "patch_result", "requested_publish"),
    ("reconcile.requested publish → confirmed", "requested_publish", "requested_confirmed"),
    ("handler done → acked", "handler_done", "acked"),
    ("TOTAL publish → seen on the watch", "pub_start", "arrival"),
)


pct = lat.pct


async def start_traced_worker(config: dict[str, Any], tmp: Path) -> asyncio.subprocess.Process:
    path = tmp / "relay.yaml"
    path.write_text(yaml.safe_dump(config))
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.stagetrace",
        str(tmp / "trace.json"),
        "--",
        "--config",
        str(path),
        "worker",
        "reconcile",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=(tmp / "worker.stderr").open("wb"),
    )


@dataclass(frozen=True)
class Plan:
    """How many pushes (and bare patches), in how many rounds, how far apart the rounds are,
    and the worker's ``kubernetes.keepalive_s``."""

    n: int = 1000
    rounds: int = lat.ROUNDS
    settle: float = lat.SETTLE
    keepalive: float = 30.0


def lone(n: int, keepalive: float) -> Plan:
    """One push per round, each contender idle QUIET seconds between its own."""
    return Plan(n=n, rounds=n, settle=QUIET / 2, keepalive=keepalive)


async def traced(server: KubeAPIServer, amqp: str, tmp: Path, plan: Plan) -> None:
    tag = uuid.uuid4().hex[:6]
    secret = tmp / "secret"
    secret.write_text("bench-secret\n")
    config = lat.config_for(server, amqp, tag, secret)
    config["kubernetes"]["keepalive_s"] = plan.keepalive
    settings = Settings.model_validate(config)
    watcher = KubeCluster(KubernetesSettings(kubeconfig=server.admin_kubeconfig))
    bare = KubeCluster(KubernetesSettings(kubeconfig=server.relay_kubeconfig))
    bus = connect(settings.broker)
    await bus.start()
    gc.callbacks.append(stagetrace._on_gc)
    ticker = asyncio.create_task(stagetrace.ticker())
    load = [os.getloadavg()]
    worker = await start_traced_worker(config, tmp)
    try:
        async with AdminApi(server.url, server.admin_token, server.ca_file) as admin:
            for i in range(TARGETS):
                await admin.create(GITREPOSITORIES, git_repository(f"bench-{tag}-{i}"))
            cpu = Cpu(processes(server, worker))
            arrivals = lat.Arrivals(watcher)
            marks, values, bare_lat = await _rounds(tag, bus, bare, arrivals, plan, cpu)
    finally:
        ticker.cancel()
        load.append(os.getloadavg())
        worker.terminate()
        await worker.wait()
        await bus.close()
        await bare.close()
        await watcher.close()
    trace = json.loads((tmp / "trace.json").read_text())
    report(marks, values, bare_lat, trace, load)
    if plan.rounds < plan.n:  # steady load; lone pushes would charge them the idle time
        print(f"\nCPU ms per event, {plan.n} events per contender:")
        for contender, used in cpu.used.items():
            per = "  ".join(f"{k} {v / plan.n * 1000:.2f}" for k, v in used.items())
            print(f"  {contender:6} {per}")


def pressure() -> str:
    """CPU and I/O pressure (PSI, some, avg10/avg60) now, when the kernel reports it."""
    found = []
    for kind in ("cpu", "io"):
        with contextlib.suppress(OSError):
            line = Path(f"/proc/pressure/{kind}").read_text().splitlines()[0]
            fields = dict(part.split("=") for part in line.split()[1:])
            found.append(f"{kind} {fields['avg10']}/{fields['avg60']}%")
    return ", ".join(found)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU a process has used (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def processes(server: KubeAPIServer, worker: asyncio.subprocess.Process) -> dict[str, int | None]:
    """The processes whose CPU is counted (RabbitMQ is shared with whatever else runs)."""
    apiserver, etcd = server._apiserver, server._etcd
    return {
        "worker": worker.pid,
        "bench": os.getpid(),
        "apiserver": apiserver.pid if apiserver else None,
        "etcd": etcd.pid if etcd else None,
        "rabbitmq (shared)": beam_pid(),
    }


def beam_pid() -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip().startswith("beam"):
                    return int(entry.name)
    return None


class Cpu:
    """CPU seconds per process, summed per contender's rounds."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.used: dict[str, dict[str, float]] = {}

    def snapshot(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def add(self, contender: str, before: dict[str, float]) -> None:
        after = self.snapshot()
        mine = self.used.setdefault(contender, dict.fromkeys(self.pids, 0.0))
        for name in self.pids:
            mine[name] += after[name] - before[name]


async def _rounds(
    tag: str,
    bus: Bus,
    bare: KubeCluster,
    arrivals: lat.Arrivals,
    plan: Plan,
    cpu: Cpu,
) -> tuple[dict[str, dict[str, float]], dict[str, str], list[float]]:
    bench: dict[str, dict[str, float]] = {}  # event id -> stage -> time
    commits: dict[str, str] = {}  # event id -> its commit
    covered: dict[str, str] = {}  # commit -> the requestedAt value that covered it
    tap = asyncio.create_task(_tap(bus, covered))

    async def via_relay(i: int) -> str:
        event = new_event(lat.push(i), source="/bench/gateway", subject="refs/heads/main")
        start = time.monotonic()
        await bus.publish(event)
        bench[event.id] = {"pub_start": start, "pub_confirmed": time.monotonic()}
        commits[event.id] = lat.push(i).after
        return event.id

    async def direct(i: int) -> str:
        value = requested_at_now()
        await bare.patch_merge(
            GITREPOSITORIES, "flux-system", f"bench-{tag}-{i % TARGETS}", annotation_patch(value)
        )
        return value

    await arrivals.start()
    measured: dict[str, float] = {}
    bare_sent: dict[str, float] = {}
    try:
        async with asyncio.timeout(60):
            while not covered:
                with contextlib.suppress(Exception):
                    await via_relay(0)
                await asyncio.sleep(0.5)
        for send in (via_relay, direct):
            await lat.paced(lat.WARMUP, 0, send)
        await asyncio.sleep(1.0)
        per_round = plan.n // plan.rounds
        contenders = [("relay", via_relay), ("bare", direct)]
        for r in range(plan.rounds):
            for name, send in contenders[r % 2 :] + contenders[: r % 2]:
                before = cpu.snapshot()
                sent = await lat.paced(per_round, lat.WARMUP + r * per_round, send)
                (measured if name == "relay" else bare_sent).update(sent)
                await asyncio.sleep(plan.settle)
                cpu.add(name, before)
    finally:
        tap.cancel()
        await arrivals.stop()
    values: dict[str, str] = {}
    for key in list(bench):
        value = covered.get(commits[key])
        if key not in measured:
            del bench[key]
        elif value in arrivals.at:
            bench[key]["arrival"] = arrivals.at[value]
            values[key] = value
    return bench, values, lat.latencies(bare_sent, arrivals.at)


async def _tap(bus: Bus, covered: dict[str, str]) -> None:
    async for event in bus.tap(["reconcile.requested"]):
        value = event.data.get("requested_at_value")
        if value:
            covered.setdefault(str(event.data.get("commit")), str(value))


def report(
    bench: dict[str, dict[str, float]],
    values: dict[str, str],
    bare: list[float],
    trace: dict[str, Any],
    load: list[tuple[float, float, float]],
) -> None:
    worker: dict[str, dict[str, float]] = trace["marks"]
    informed: dict[str, float] = trace["informed"]
    rows: dict[str, dict[str, float]] = {}
    for key, marks in bench.items():
        row = {**worker.get(key, {}), **marks}
        value = values.get(key)
        if value is not None and value in informed:
            row["informed"] = informed[value]
        rows[key] = row
    complete = [r for r in rows.values() if "arrival" in r and "patch_sent" in r]
    print(f"load average at start {load[0]}, at end {load[-1]}; pressure {pressure()}")
    print(f"relay events traced: {len(complete)} of {len(rows)}; bare patches: {len(bare)}")
    print(f"{'stage':52} {'n':>5} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}  (ms)")
    for title, a, b in SEGMENTS:
        spans = [r[b] - r[a] for r in complete if a in r and b in r]
        if spans:
            print(
                f"{title:52} {len(spans):5d} {pct(spans, 0.5):7.1f} {pct(spans, 0.9):7.1f} "
                f"{pct(spans, 0.99):7.1f} {max(spans) * 1000:7.1f}"
            )
    print(
        f"{'bare patch → seen on the watch':52} {len(bare):5d} {pct(bare, 0.5):7.1f} "
        f"{pct(bare, 0.9):7.1f} {pct(bare, 0.99):7.1f} {max(bare) * 1000:7.1f}"
    )
    _slowest(complete, trace)


def _slowest(rows: list[dict[str, float]], trace: dict[str, Any]) -> None:
    rows = sorted(rows, key=lambda r: r["arrival"] - r["pub_start"], reverse=True)
    worst = rows[: max(10, len(rows) // 50)]
    print(f"\nthe {len(worst)} slowest: per stage ms; worker GC ms and loop stalls ms inside")
    for r in worst:
        parts = [
            f"{b}+{(r[b] - r[a]) * 1000:.0f}"
            for a, b in itertools.pairwise(ORDER)
            if a in r and b in r
        ]
        lo, hi = r["pub_start"], r["arrival"]
        gcs = [d * 1000 for s, d, _ in trace["gc"] if lo <= s <= hi]
        stalls = [late * 1000 for due, late in trace["stalls"] if lo <= due <= hi]
        mine = [late * 1000 for due, late in stagetrace.STALLS if lo <= due <= hi]
        sampling = any(s <= hi and lo <= s + d for s, d in trace.get("samples", []))
        print(
            f"{(hi - lo) * 1000:6.0f}: {' '.join(parts)} | worker gc {sum(gcs):.0f} "
            f"stalls {max(stalls, default=0):.0f} | bench stalls {max(mine, default=0):.0f}"
            f"{' | queue metrics sampled' if sampling else ''}"
        )
    _window(rows, trace)


def _window(rows: list[dict[str, float]], trace: dict[str, Any]) -> None:
    """GC, loop stalls and queue-metric samples from the first measured push to the last."""
    lo = min(r["pub_start"] for r in rows)
    hi = max(r["arrival"] for r in rows)
    gcs = [g for g in trace["gc"] if lo <= g[0] <= hi]
    total = sum(d for _, d, _ in gcs)
    stalls = [s for s in trace["stalls"] if lo <= s[0] <= hi]
    print("\n(from the first measured publish to the last arrival)")
    print(
        f"worker: {len(gcs)} collections, {total * 1000:.0f} ms in all, longest "
        f"{max((d for _, d, _ in gcs), default=0) * 1000:.1f} ms; "
        f"{len(stalls)} loop stalls > 2 ms, longest "
        f"{max((late for _, late in stalls), default=0) * 1000:.0f} ms"
    )
    samples = [x for x in trace.get("samples", []) if lo <= x[0] <= hi]
    during = [
        r["arrival"] - r["pub_start"]
        for r in rows
        if any(s <= r["arrival"] and r["pub_start"] <= s + d for s, d in samples)
    ]
    print(
        f"worker: queue metrics sampled {len(samples)} times, "
        f"{', '.join(f'{d * 1000:.0f}' for _, d in samples)} ms; {len(during)} pushes overlapped "
        f"them, their latency p50 {pct(during, 0.5) if during else 0:.1f} "
        f"max {max(during, default=0) * 1000:.1f} ms"
    )
    print(
        f"bench: {len([g for g in stagetrace.GC if lo <= g[0] <= hi])} collections; "
        f"{len([s for s in stagetrace.STALLS if lo <= s[0] <= hi])} loop stalls > 2 ms"
    )


def main() -> None:
    configure(level="info", stream=open(os.devnull, "w"))  # noqa: SIM115 - the process's sink
    args = sys.argv[1:]
    if args[:1] == ["lone"]:
        plan = lone(int(args[1]), float(args[2]) if len(args) > 2 else Plan.keepalive)
    else:
        plan = Plan(n=int(args[0])) if args else Plan()
    print(plan)
    with kube_and_vhost() as (server, amqp, tmp):
        asyncio.run(traced(server, amqp, tmp, plan))


if __name__ == "__main__":
    main()
