"""Throw-away parts for the demo: a bare GitOps repository and, when installed, a registry."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp


@dataclass
class DemoParts:
    root: Path
    gitops: Path
    registry: str | None
    builder: str


async def git(*args: str, cwd: Path | None = None) -> str:
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    process = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"git {args[0]} failed: {err.decode().strip()}")
    return out.decode()


async def make_gitops_repo(root: Path) -> Path:
    bare = root / "homelab.git"
    await git("init", "--bare", "--initial-branch=main", str(bare))
    work = root / "seed"
    await git("clone", "--quiet", str(bare), str(work))
    (work / "README.md").write_text(
        "# homelab\nManaged by Flux; apps under kubernetes/rpi-cluster.\n"
    )
    await git("add", "README.md", cwd=work)
    await git(
        "-c",
        "user.name=demo",
        "-c",
        "user.email=demo@example.com",
        "commit",
        "-qm",
        "Start",
        cwd=work,
    )
    await git("push", "--quiet", "origin", "HEAD:main", cwd=work)
    shutil.rmtree(work)
    return bare


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def local_registry(root: Path) -> AsyncIterator[str | None]:
    """A Docker Registry v2 on loopback when ``docker-registry`` is installed, else None."""
    binary = shutil.which("docker-registry")
    if binary is None:
        yield None
        return
    port = free_port()
    config = root / "registry.yml"
    config.write_text(
        "version: 0.1\nlog: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'registry'}}}, "
        "delete: {enabled: true}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    process = await asyncio.create_subprocess_exec(
        binary,
        "serve",
        str(config),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await _wait_for(f"http://127.0.0.1:{port}/v2/")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        await process.wait()


async def _wait_for(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status < 500:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


@contextlib.asynccontextmanager
async def demo_parts(keep: Path | None = None) -> AsyncIterator[DemoParts]:
    root = keep or Path(tempfile.mkdtemp(prefix="relay-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        gitops = await make_gitops_repo(root)
        async with local_registry(root) as registry:
            builder = "buildah" if registry and shutil.which("buildah") else "none"
            yield DemoParts(root=root, gitops=gitops, registry=registry, builder=builder)
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
