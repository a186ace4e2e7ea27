"""deploy.requested → image.pushed latency of the build worker, against the bare tools.

Cases: a prebuilt image (digest resolution only), a ``FROM scratch`` app with COPY, and a
``RUN`` app on the tests' busybox base. Each is measured one at a time (``REPEAT`` deploys) and
five at once (``builder.concurrency`` = 5), through the real runtime on the in-memory bus, a real
``docker-registry`` (bcrypt htpasswd) and buildah. Baselines in the same run: a bare HEAD of the
manifest (prebuilt), and the bare ``buildah bud`` + ``buildah push`` commands with the same
storage root and driver (builds). The ratio is relay / baseline.

Run: ``python -m bench.build_latency``. Prints a table and appends it, with the machine and the
date, to BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.summary import Metric, skipped
from relay.logging import configure
from tests.build.harness import Harness, make_settings, run_app
from tests.support.images import Buildah, make_busybox_base, push_scratch_image
from tests.support.registry import Registry
from workers.build.builders.base import write_auth_file
from workers.build.builders.buildah import BuildahBuilder
from workers.build.registry import credentials
from workers.build.worker import BuildWorker

REPEAT = 5
AT_ONCE = 5
ROOT = Path(__file__).resolve().parents[1]


def scratch_app(marker: str) -> dict[str, Any]:
    return {
        "files": {"index.html": f"<p>{marker}</p>\n"},
        "dockerfile": "FROM scratch\nCOPY . /srv/\n",
    }


class Bench:
    def __init__(self, tmp: Path, registry: Registry, base: str) -> None:
        self.tmp = tmp
        self.registry = registry
        self.base = base
        self.settings = make_settings(
            registry, tmp, buildah_root=tmp / "buildah", builder={"concurrency": AT_ONCE}
        )
        self.worker = BuildWorker(self.settings)
        assert isinstance(self.worker.builder, BuildahBuilder)
        self.builder: BuildahBuilder = self.worker.builder
        self.driver = "vfs"
        self.creds = credentials(self.settings.deploy.registry, registry.host)

    # --- through the relay ----------------------------------------------------------------

    def request(self, case: str) -> dict[str, Any]:
        app, marker = f"bench-{case}", uuid.uuid4().hex[:12]
        if case == "prebuilt":
            image = push_scratch_image(self.registry, app, marker, marker.encode())
            return {"app": app, "version": marker, "image": image.ref}
        source = scratch_app(marker) if case == "scratch" else run_app(self.base, marker)
        return {"app": app, "version": marker, "source": source}

    async def relay_once(self, h: Harness, request: dict[str, Any]) -> float:
        started = time.perf_counter()
        got = await h.outcome(await h.deploy(request))
        if got.routing_key != "image.pushed":
            raise RuntimeError(f"deploy failed: {got.data}")
        return time.perf_counter() - started

    # --- baselines ------------------------------------------------------------------------

    async def bare_once(self, request: dict[str, Any]) -> float:
        if "image" in request:
            repo, tag = request["app"], request["version"]
            started = time.perf_counter()
            await asyncio.to_thread(self.registry.manifest_digest, repo, tag)
            return time.perf_counter() - started
        return await asyncio.to_thread(self._bare_build, request)

    def _bare_build(self, request: dict[str, Any]) -> float:
        work = Path(tempfile.mkdtemp(dir=self.tmp))
        (work / "ctx").mkdir()
        for name, text in request["source"]["files"].items():
            (work / "ctx" / name).write_text(text)
        (work / "Dockerfile").write_text(request["source"]["dockerfile"])
        auth = write_auth_file(work / "auth.json", self.creds)
        ref = f"{self.registry.host}/bare-{request['app']}:{request['version']}"
        base = self._buildah_base()
        env = {**os.environ, "REGISTRY_AUTH_FILE": str(auth), "TMPDIR": str(work)}
        creds = ["--authfile", str(auth), "--tls-verify=false"]
        started = time.perf_counter()
        for argv in (
            [
                *base,
                "bud",
                "--isolation",
                "chroot",
                *creds,
                "-f",
                str(work / "Dockerfile"),
                "-t",
                ref,
                str(work / "ctx"),
            ],
            [*base, "push", *creds, "--digestfile", str(work / "d"), ref, f"docker://{ref}"],
            [*base, "rmi", "--force", ref],
        ):
            subprocess.run(argv, env=env, check=True, capture_output=True)
        seconds = time.perf_counter() - started
        shutil.rmtree(work, ignore_errors=True)
        return seconds

    def _buildah_base(self) -> list[str]:
        root = self.builder.root
        return [
            "buildah",
            "--root",
            str(root / "storage"),
            "--runroot",
            str(root / "run"),
            "--storage-driver",
            self.driver,
        ]

    async def measure(self, case: str, repeat: int = REPEAT) -> dict[str, float]:
        async with Harness(self.settings, self.worker) as h:
            await self.relay_once(h, self.request(case))  # warm-up: base pulled, driver chosen
            await self.bare_once(self.request(case))
            seq = [await self.relay_once(h, self.request(case)) for _ in range(repeat)]
            bare = [await self.bare_once(self.request(case)) for _ in range(repeat)]
            # requests are made before the clock runs; bare and relay alternate, twice each, so
            # that a change in the machine's load does not favour one of them
            walls: dict[str, list[float]] = {"bare": [], "relay": []}
            each: list[float] = []
            for _ in range(2):
                batch = [self.request(case) for _ in range(AT_ONCE)]
                wall, _ = await _at_once([self.bare_once(r) for r in batch])
                walls["bare"].append(wall)
                batch = [self.request(case) for _ in range(AT_ONCE)]
                wall, times = await _at_once([self.relay_once(h, r) for r in batch])
                walls["relay"].append(wall)
                each += times
            bare_wall, relay_wall = min(walls["bare"]), min(walls["relay"])
        return {
            "bare": statistics.median(bare),
            "seq": statistics.median(seq),
            "seq_max": max(seq),
            "bare_wall": bare_wall,
            "wall": relay_wall,
            "each": statistics.median(each),
        }


async def _at_once(runs: list[Coroutine[Any, Any, float]]) -> tuple[float, list[float]]:
    started = time.perf_counter()
    each = await asyncio.gather(*runs)
    return time.perf_counter() - started, list(each)


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    cpu = models[0] if models else platform.processor()
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    version = subprocess.run(["buildah", "--version"], capture_output=True, text=True, check=True)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores (shared with other jobs; load average {load} at the "
        f"start), {int(mem) // 1024 // 1024} GiB, Linux {platform.release()}, Python "
        f"{platform.python_version()}, {version.stdout.strip()}, docker-registry (distribution "
        "2.8, bcrypt htpasswd) on loopback"
    )


def table(results: dict[str, dict[str, float]], driver: str) -> str:
    rows = [
        "| case | bare median s | relay median s (max) | ratio | 5 at once: bare wall s "
        "| relay wall s | relay per deploy s | ratio (wall) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {
        "prebuilt": "prebuilt (digest resolution)",
        "scratch": "FROM scratch + COPY",
        "run": "FROM busybox + RUN",
    }
    for case, r in results.items():
        rows.append(
            f"| {names[case]} | {r['bare']:.3f} | {r['seq']:.3f} ({r['seq_max']:.3f}) "
            f"| {r['seq'] / r['bare']:.1f}x | {r['bare_wall']:.3f} | {r['wall']:.3f} "
            f"| {r['each']:.3f} | {r['wall'] / r['bare_wall']:.1f}x |"
        )
    return "\n".join(rows) + f"\n\nbuildah storage driver: {driver}."


NAMES = {
    "prebuilt": "prebuilt image (digest resolution)",
    "scratch": "FROM scratch + COPY build",
    "run": "FROM busybox + RUN build",
}


def collect(quick: bool = True) -> list[Metric]:
    """For ``make bench``: deploy.requested -> image.pushed against the bare tools.

    Quick: the prebuilt and FROM-scratch cases, 3 one at a time; full: all three, 5."""
    missing = [t for t in ("buildah", "docker-registry") if shutil.which(t) is None]
    if missing:
        return [skipped("build", f"{', '.join(missing)} not installed")]
    cases = ("prebuilt", "scratch") if quick else ("prebuilt", "scratch", "run")
    results = asyncio.run(_measure_cases(cases, 3 if quick else REPEAT))
    metrics: list[Metric] = []
    for case, r in results.items():
        metrics += [
            Metric(
                bench="build",
                name=f"{NAMES[case]}, median of one at a time",
                value=r["seq"],
                unit="s",
                baseline=r["bare"],
                baseline_name="bare HEAD" if case == "prebuilt" else "bare buildah",
            ),
            Metric(
                bench="build",
                name=f"{NAMES[case]}, {AT_ONCE} at once (wall)",
                value=r["wall"],
                unit="s",
                baseline=r["bare_wall"],
                baseline_name="bare HEAD" if case == "prebuilt" else "bare buildah",
            ),
        ]
    return metrics


async def _measure_cases(cases: tuple[str, ...], repeat: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="relay-bench-build-") as raw:
        tmp = Path(raw)
        registry = Registry(tmp / "registry").start()
        try:
            base = (
                make_busybox_base(registry, buildah=Buildah(tmp / "base")) if "run" in cases else ""
            )
            bench = Bench(tmp, registry, base)
            bench.driver = await bench.builder.storage_driver()
            return {case: await bench.measure(case, repeat) for case in cases}
        finally:
            registry.close()
            _unmount_below(tmp)


async def main() -> None:
    configure(level="warning", stream=sys.stderr)
    facts = machine()
    with tempfile.TemporaryDirectory(prefix="relay-bench-build-") as raw:
        tmp = Path(raw)
        registry = Registry(tmp / "registry").start()
        try:
            base = make_busybox_base(registry, buildah=Buildah(tmp / "base"))
            bench = Bench(tmp, registry, base)
            bench.driver = await bench.builder.storage_driver()
            results = {case: await bench.measure(case) for case in ("prebuilt", "scratch", "run")}
        finally:
            registry.close()
            _unmount_below(tmp)
    text = table(results, bench.driver)
    print(text)
    _append(facts, text)


def _unmount_below(root: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(str(root))), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def _append(facts: str, text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    if not path.exists():
        path.write_text(
            "# Benchmarks\n\nEach section: a dated run, with the machine it ran on; ratios compare "
            "against a baseline measured in the same run.\n"
        )
    day = datetime.now(UTC).date().isoformat()
    note = (
        "Latency from publishing deploy.requested to receiving image.pushed, through the real "
        f"runtime (memory bus), {REPEAT} deploys one at a time after a warm-up, then {AT_ONCE} at "
        f"once with builder.concurrency = {AT_ONCE} (wall: best of two rounds, bare and relay "
        "alternating). Baselines: a bare HEAD of the manifest (prebuilt); the bare `buildah "
        "bud` + `push` + `rmi` commands on the same storage (builds). The relay adds writing "
        "the context, the source-digest check (HEAD + config GET) and the digest check after "
        "the push; retention runs after image.pushed."
    )
    with path.open("a") as out:
        out.write(f"\n## Build latency ({day}, `python -m bench.build_latency`)\n\n")
        out.write(f"{facts}.\n\n{text}\n\n{note}\n")


if __name__ == "__main__":
    asyncio.run(main())
