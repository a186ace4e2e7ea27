"""One run's whole relay: real services, the relay's processes, secrets, config and a callback sink.

The services are the tests' own harnesses (``tests.support``): a Docker registry with Basic auth
and a Git smart-HTTP server (nginx + git http-backend) with a token, each on its own loopback
port and able to stop and start again on the same port and data. The relay runs as separate
processes, ``relay gateway`` and ``relay worker NAME`` for every worker this installation has,
with one YAML config whose secrets are files. Deploys carry a ``callback_url`` to a small sink
here, which records every signed callback the notify worker delivers.

With ``StackConfig.kubernetes`` the run also has a real Kubernetes API server (etcd and
kube-apiserver from ``tests.support.kubeapi``, Flux's CRDs installed, the API server able to stop
and start again on the same port and etcd data), a stand-in Flux process (``chaos.flux``) and a
``kubernetes`` section in the config with the relay's least-privilege kubeconfig (the tests'
RBAC: patch Flux objects, read rollouts), so the reconcile and watch workers talk to it and
deploys end in ``deploy.ready``. Without it they report their stages as skipped.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

import workers
from chaos import flux
from chaos.procs import RelayProcess, relay_argv
from relay.signing import SignatureError, verify_relay
from tests.support._procs import free_port
from tests.support.gitserver import GitServer
from tests.support.images import push_scratch_image
from tests.support.kube_fixtures import ensure_kube_binaries, kube_cache_dir
from tests.support.kubeapi import KubeAPIServer
from tests.support.registry import Registry

GITOPS_PATH = "kubernetes/rpi-cluster/apps/dynamic"
READY_LINE = {"gateway": "gateway listening"}  # the others: "worker started"


@dataclass
class StackConfig:
    broker_url: str
    retry_delays: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    max_attempts: int = 4
    batch_window_ms: int = 200
    build_concurrency: int = 2
    log_level: str = "info"
    kubernetes: bool = False  # a real API server and a stand-in Flux (see the module docstring)
    reconcile_timeout: float = 90.0  # the reconcile and watch workers' bounds on their waits
    rollout_deadline: float = 60.0
    rollout_seconds: float = 1.0  # how long the stand-in Flux's rollouts take


class CallbackSink:
    """``POST /callback``: what the notify worker reports per deployment, signature checked."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.port = free_port()
        self.by_deployment: dict[str, list[str]] = defaultdict(list)
        self.bad_signatures = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify_relay(request.headers, body, [self.secret])
        except SignatureError:
            self.bad_signatures += 1
            return web.json_response({"error": "bad signature"}, status=401)
        data = json.loads(body)
        self.by_deployment[str(data.get("deployment_id"))].append(str(data.get("status")))
        return web.json_response({"ok": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/callback", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class Stack:
    """Services, config and relay processes of one run under ``root``."""

    def __init__(self, root: Path, config: StackConfig) -> None:
        self.root = root
        self.cfg = config
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.secrets_dir = root / "secrets"
        self.secrets_dir.mkdir(exist_ok=True)
        self.values = {
            name: secrets.token_urlsafe(24)
            for name in ("deploy", "github-old", "github", "gitlab-token")
        }
        self.registry = Registry(root / "registry")
        self.git = GitServer(root / "git")
        self.sink = CallbackSink(self.values["deploy"])
        self.port = free_port()
        self.config_path = root / "relay.yaml"
        self.worker_names = [n for n in workers.available() if n in workers.WORKERS]
        self.procs: dict[str, RelayProcess] = {}
        self.extra_secrets: dict[str, str] = {}  # e.g. a private broker's password
        self.kube: KubeAPIServer | None = None
        if config.kubernetes:
            self.kube = KubeAPIServer(cache_dir=kube_cache_dir(), work_dir=root / "kube")
        self.flux: RelayProcess | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def kubernetes_workers(self) -> bool:
        """Whether the reconcile and watch workers exist (then deploys end in deploy.ready)."""
        return {"reconcile", "watch"} <= set(self.worker_names)

    # --- secrets ------------------------------------------------------------------------------

    def secret_values(self) -> dict[str, str]:
        """Every secret of the run and the encoded forms it could leak in, by a label."""
        found = {**self.values, **self.extra_secrets}
        found["registry-password"] = self.registry.password
        found["git-token"] = self.git.password
        found["registry-basic"] = _b64(f"{self.registry.username}:{self.registry.password}")
        found["git-basic"] = _b64(f"{self.git.username}:{self.git.password}")
        if self.kube is not None:
            found["kube-admin-token"] = self.kube.admin_token
            found["kube-relay-token"] = self.kube.relay_token
        for name, value in list(found.items()):
            if not name.endswith("-basic"):
                found[f"{name}-b64"] = _b64(value)
        return found

    def _secret_file(self, name: str) -> str:
        path = self.secrets_dir / name
        path.write_text(self.values[name] + "\n")
        path.chmod(0o600)
        return str(path)

    # --- config -------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        unlimited = {"requests": 1_000_000, "per_seconds": 1.0}
        return {
            "broker": {
                "url": self.cfg.broker_url,
                "retry": {"delays": self.cfg.retry_delays, "max_attempts": self.cfg.max_attempts},
                "reconnect_interval": 0.5,
            },
            "http": {"host": "127.0.0.1", "port": self.port, "rate_limit": unlimited},
            "receivers": [
                {
                    "name": "gh",
                    "type": "github",
                    "secret_files": [self._secret_file("github-old"), self._secret_file("github")],
                },
                {"name": "gl", "type": "gitlab", "secret_file": self._secret_file("gitlab-token")},
            ],
            "deploy": self._deploy_settings(unlimited),
            **({"kubernetes": self._kube_settings()} if self.kube is not None else {}),
            "log": {"level": self.cfg.log_level, "format": "json"},
        }

    def _kube_settings(self) -> dict[str, Any]:
        assert self.kube is not None
        return {
            "kubeconfig": str(self.kube.relay_kubeconfig),
            "reconcile_timeout": self.cfg.reconcile_timeout,
            "kustomization_appear_timeout": self.cfg.reconcile_timeout,
            "rollout_deadline": self.cfg.rollout_deadline,
        }

    def _deploy_settings(self, unlimited: dict[str, Any]) -> dict[str, Any]:
        return {
            "secret_file": self._secret_file("deploy"),
            "domain": "apps.chaos.test",
            "rate_limit": unlimited,
            "registry": {
                "url": self.registry.host,
                "username": self.registry.username,
                "password_file": str(self.registry.password_file),
                "insecure": True,
                "request_timeout": 5.0,
            },
            "gitops": {
                "url": self.git.url,
                "username": self.git.username,
                "token_file": str(self.git.token_file),
                "path": GITOPS_PATH,
                "workdir": str(self.root / "commit-clone"),
                "batch_window_ms": self.cfg.batch_window_ms,
                "command_timeout": 20.0,
            },
            "builder": {
                "backend": "buildah",
                "concurrency": self.cfg.build_concurrency,
                "storage_driver": "vfs",
                "buildah_root": str(self.root / "buildah"),
                "workdir": str(self.root / "builds"),
                "timeout": 120.0,
            },
            "callback": {"timeout": 5.0, "retry_schedule": [0.2, 0.5]},
        }

    # --- lifecycle ----------------------------------------------------------------------------

    async def start_services(self) -> None:
        await asyncio.gather(
            asyncio.to_thread(self.registry.start),
            asyncio.to_thread(self.git.start),
            self._start_kube(),
        )
        await self.sink.start()
        self.write_config()
        await self._start_flux()

    async def _start_kube(self) -> None:
        if self.kube is not None:
            await asyncio.to_thread(ensure_kube_binaries)  # at once when they are cached
            await asyncio.to_thread(self.kube.start)

    async def _start_flux(self, timeout: float = 60.0) -> None:
        if self.kube is None:
            return
        argv = [
            sys.executable,
            "-m",
            "chaos.flux",
            "--kubeconfig",
            str(self.kube.admin_kubeconfig),
            "--repo",
            str(self.git.bare_path),
            "--url",
            self.git.url,
            "--path",
            GITOPS_PATH,
            "--rollout-seconds",
            str(self.cfg.rollout_seconds),
        ]
        self.flux = RelayProcess("flux", argv, self.logs / "flux.log")
        mark = self.flux.mark()
        await self.flux.start()
        if not await self.flux.wait_line(flux.READY_LINE, since=mark, timeout=timeout):
            raise RuntimeError(f"the stand-in Flux did not start; see {self.flux.log_path}")

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.settings(), sort_keys=False))

    async def start_relay(self, timeout: float = 60.0) -> None:
        """Start the gateway first (it declares the history stream), then every worker."""
        await self.start_process("gateway", timeout=timeout)
        await asyncio.gather(*(self.start_process(n, timeout=timeout) for n in self.worker_names))

    async def start_process(self, name: str, *, timeout: float = 60.0) -> None:
        proc = self.procs.get(name)
        if proc is None:
            args = ("gateway",) if name == "gateway" else ("worker", name)
            proc = RelayProcess(
                name, relay_argv(self.config_path, *args), self.logs / f"{name}.log"
            )
            self.procs[name] = proc
        mark = proc.mark()
        await proc.start()
        line = READY_LINE.get(name, "worker started")
        if not await proc.wait_line(line, since=mark, timeout=timeout):
            raise RuntimeError(f"{name} did not start within {timeout:g}s; see {proc.log_path}")

    async def push_images(self, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Prebuilt FROM-scratch images ``apps/<app>:<version>``; their references."""

        def push_all() -> dict[tuple[str, str], str]:
            refs = {}
            for app, version in wanted:
                pushed = push_scratch_image(
                    self.registry, f"apps/{app}", version, f"{app} {version}\n".encode()
                )
                refs[(app, version)] = pushed.ref
            return refs

        return await asyncio.to_thread(push_all)

    async def close(self) -> None:
        """Stop every relay process (graceful, then killed), the sink and the services."""
        await asyncio.gather(*(p.stop(timeout=10.0) for p in self.procs.values()))
        if self.flux is not None:
            await self.flux.stop(timeout=5.0)
        await self.sink.stop()
        await asyncio.gather(
            asyncio.to_thread(self.registry.stop),
            asyncio.to_thread(self.git.stop),
            *([asyncio.to_thread(self.kube.stop)] if self.kube is not None else []),
        )

    def log_files(self) -> list[Path]:
        """Every log of the run: the relay's processes and the services'."""
        return sorted(p for p in self.root.rglob("*.log") if p.is_file())


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
