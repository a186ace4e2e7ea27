"""Commit throughput: group commit (the commit worker) against clone-commit-push per deploy.

    python -m bench.commit_throughput            # print the table
    python -m bench.commit_throughput --record   # and append it, dated, to BENCHMARKS.md

Against a real Git smart-HTTP server on loopback (nginx + fcgiwrap + git http-backend, basic
auth; ``tests/support/gitserver.py``), with 1, 10 and 50 clients each sending deploys one after
another (closed loop). Per mode: deploys committed per second and pushes (POSTs to
git-receive-pack, accepted or refused, from the server's access log) per deploy.

- ``worker``: the commit worker in the real runtime on the in-memory bus; a client's deploy
  counts when its ``manifests.committed`` arrives (published after the push was accepted).
- ``naive``: per deploy, a fresh ``git clone``, the same rendered files, commit, push; on a
  refused push ``git pull --rebase`` and push again with jittered back-off (what a careful
  script does, so that no change is lost).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bench.summary import Metric, skipped
from relay.bus import Ack, Incoming, Outcome, QueueSpec
from relay.bus.memory import MemoryBus
from relay.events import decode
from relay.logging import configure
from relay.settings import Settings
from tests.commit.conftest import GITOPS_PATH, image_pushed, receive_pack_posts
from tests.support.gitserver import GitServer
from workers.commit import CommitWorker
from workers.commit.render import AppSpec, render_app
from workers.runtime import WorkerHost

LEVELS = ((1, 10), (10, 30), (50, 50))  # (clients, deploys in total)
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    mode: str
    clients: int
    deploys: int
    seconds: float
    pushes: int

    @property
    def rate(self) -> float:
        return self.deploys / self.seconds

    @property
    def pushes_per_deploy(self) -> float:
        return self.pushes / self.deploys


async def closed_loop(clients: int, total: int, one: Callable[[int], Awaitable[None]]) -> float:
    """``clients`` tasks taking deploy numbers until ``total`` are done; wall seconds."""
    numbers = iter(range(total))

    async def client() -> None:
        for n in numbers:
            await one(n)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started


def settings_for(server: GitServer, work: Path, window_ms: int) -> Settings:
    return Settings.model_validate(
        {
            "deploy": {
                "gitops": {
                    "url": server.url,
                    "path": GITOPS_PATH,
                    "username": server.username,
                    "token_file": str(server.token_file),
                    "workdir": str(work / "clone"),
                    "batch_window_ms": window_ms,
                    "batch_max": 50,
                }
            }
        }
    )


async def run_worker(server: GitServer, work: Path, clients: int, total: int, window: int) -> Run:
    settings = settings_for(server, work, window)
    bus = MemoryBus()
    await bus.start()
    worker = CommitWorker(settings)
    host = WorkerHost(bus, settings, [worker])
    waiting: dict[str, asyncio.Future[str]] = {}

    async def sink(message: Incoming) -> Outcome:
        event = decode(message.body)
        future = waiting.pop(event.deploymentid or "", None)
        if future is not None:
            future.set_result(event.routing_key)
        return Ack()

    await bus.consume(
        QueueSpec(name="bench.sink", keys=("manifests.committed", "deploy.failed")), sink
    )
    await host.start()

    async def one(n: int) -> None:
        event = image_pushed(f"app-{n:03d}", "v1")
        waiting[event.deploymentid or ""] = asyncio.get_running_loop().create_future()
        future = waiting[event.deploymentid or ""]
        await bus.publish(event)
        if await future != "manifests.committed":
            raise RuntimeError(f"deploy {n} failed")

    before = receive_pack_posts(server)
    try:
        seconds = await closed_loop(clients, total, one)
    finally:
        await host.stop(grace=5)
        await bus.close()
    return Run(f"worker {window} ms", clients, total, seconds, receive_pack_posts(server) - before)


async def git(*args: str, cwd: Path | None = None, env: dict[str, str]) -> int:
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await proc.wait()


async def naive_deploy(server: GitServer, work: Path, n: int) -> None:
    """Clone, write, commit, push; on refusal pull --rebase and push again."""
    env = server.client_env(
        {
            "GIT_AUTHOR_NAME": "naive",
            "GIT_AUTHOR_EMAIL": "n@example.invalid",
            "GIT_COMMITTER_NAME": "naive",
            "GIT_COMMITTER_EMAIL": "n@example.invalid",
        }
    )
    clone = Path(tempfile.mkdtemp(prefix=f"naive-{n}-", dir=work))
    try:
        if await git("clone", "-q", server.authed_url(), str(clone), env=env):
            raise RuntimeError("clone failed")
        event = image_pushed(f"app-{n:03d}", "v1")
        spec = AppSpec(
            app=f"app-{n:03d}",
            version="v1",
            image=event.data["image"],
            deployment_id=event.deploymentid or "",
            requested_at=dt.datetime.now(dt.UTC),
        )
        settings = settings_for(server, work, 0).deploy
        for name, body in render_app(spec, settings).items():
            path = clone / GITOPS_PATH / spec.app / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        await git("add", "-A", cwd=clone, env=env)
        await git("commit", "-qm", f"deploy {spec.app}", cwd=clone, env=env)
        for attempt in range(1, 60):
            if await git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=clone, env=env) == 0:
                return
            await asyncio.sleep(min(0.05 * 2 ** (attempt - 1), 2.0) * random.uniform(0.5, 1.0))
            await git("pull", "-q", "--rebase", "origin", "main", cwd=clone, env=env)
        raise RuntimeError(f"naive deploy {n} never landed")
    finally:
        await asyncio.to_thread(shutil.rmtree, clone, True)


async def run_naive(server: GitServer, work: Path, clients: int, total: int) -> Run:
    before = receive_pack_posts(server)
    seconds = await closed_loop(clients, total, lambda n: naive_deploy(server, work, n))
    return Run("naive", clients, total, seconds, receive_pack_posts(server) - before)


def check_all_landed(server: GitServer, total: int) -> None:
    apps = {
        p.split("/")[len(GITOPS_PATH.split("/"))]
        for p in server.list_files()
        if p.startswith(GITOPS_PATH + "/")
    }
    missing = {f"app-{n:03d}" for n in range(total)} - apps
    if missing:
        raise RuntimeError(f"not on the remote: {sorted(missing)[:5]}")


MODES = ("naive", "worker 300", "worker 0")


async def measure(
    base: Path, levels: tuple[tuple[int, int], ...] = LEVELS, modes: tuple[str, ...] = MODES
) -> list[Run]:
    runs: list[Run] = []
    with GitServer(base / "git") as server:
        for clients, total in levels:
            for mode in modes:
                server.fresh_repo()
                work = Path(tempfile.mkdtemp(prefix="work-", dir=base))
                if mode == "naive":
                    run = await run_naive(server, work, clients, total)
                else:
                    run = await run_worker(server, work, clients, total, int(mode.split()[1]))
                check_all_landed(server, total)
                runs.append(run)
                print(
                    f"  {run.mode:<14} clients={clients:<3} {run.rate:6.1f} deploys/s  "
                    f"{run.pushes_per_deploy:5.2f} pushes/deploy",
                    file=sys.stderr,
                )
    return runs


def machine() -> str:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    git_version = subprocess.run(["git", "--version"], capture_output=True, text=True, check=True)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores (shared with other jobs; load average {load} at "
        f"the start), Linux {platform.release()}, Python {platform.python_version()}, "
        f"{git_version.stdout.strip()}, nginx + fcgiwrap (-c 4) + git http-backend on loopback"
    )


def table(runs: list[Run]) -> str:
    lines = [
        "| clients | deploys | naive deploys/s | worker 300 ms deploys/s | worker 0 ms "
        "deploys/s | speed-up (300 ms / 0 ms) | pushes per deploy naive / 300 ms / 0 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for clients, total in LEVELS:
        by = {r.mode: r for r in runs if r.clients == clients}
        naive, slow, fast = by["naive"], by["worker 300 ms"], by["worker 0 ms"]
        lines.append(
            f"| {clients} | {total} | {naive.rate:.1f} | {slow.rate:.1f} | {fast.rate:.1f} | "
            f"{slow.rate / naive.rate:.1f}x / {fast.rate / naive.rate:.1f}x | "
            f"{naive.pushes_per_deploy:.2f} / {slow.pushes_per_deploy:.2f} / "
            f"{fast.pushes_per_deploy:.2f} |"
        )
    return "\n".join(lines)


def collect(quick: bool = True) -> list[Metric]:
    """For ``make bench``: the commit worker (default 300 ms window) against clone-commit-push."""
    missing = [t for t in ("git", "nginx", "fcgiwrap") if shutil.which(t) is None]
    if missing:
        return [skipped("commit", f"{', '.join(missing)} not installed")]
    levels = ((1, 5), (10, 20), (50, 50)) if quick else LEVELS
    with tempfile.TemporaryDirectory(prefix="bench-commit-") as tmp:
        runs = asyncio.run(measure(Path(tmp), levels, ("naive", "worker 300")))
    metrics: list[Metric] = []
    for clients, total in levels:
        by = {r.mode: r for r in runs if r.clients == clients}
        naive, worker = by["naive"], by["worker 300 ms"]
        what = f"{clients} clients, {total} deploys"
        metrics += [
            Metric(
                bench="commit",
                name=f"deploys/s, {what}",
                value=worker.rate,
                unit="deploys/s",
                baseline=naive.rate,
                baseline_name="clone-commit-push each",
            ),
            Metric(
                bench="commit",
                name=f"pushes per deploy, {what}",
                value=worker.pushes_per_deploy,
                unit="",
                baseline=naive.pushes_per_deploy,
                baseline_name="clone-commit-push each",
            ),
        ]
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--record", action="store_true", help="append to BENCHMARKS.md")
    args = parser.parse_args()
    configure(level="warning", fmt="console", stream=sys.stderr)
    facts = machine()
    with tempfile.TemporaryDirectory(prefix="bench-commit-") as tmp:
        runs = asyncio.run(measure(Path(tmp)))
    section = (
        f"\n## Commit throughput ({dt.date.today().isoformat()}, "
        f"`python -m bench.commit_throughput`)\n\n{facts}.\n\n{table(runs)}\n"
    )
    print(section)
    if args.record:
        path = ROOT / "BENCHMARKS.md"
        if not path.exists():
            path.write_text(
                "# Benchmarks\n\nEach section: a dated run, with the machine it ran on; "
                "ratios compare against a baseline measured in the same run.\n"
            )
        with path.open("a") as out:
            out.write(section)


if __name__ == "__main__":
    main()
