"""Helpers for the tests on the real API server: an async admin client for what Flux, the
kubelet and the deployment controller write (``/status`` subresources, events), the stand-in
kubelet, and a TCP proxy that can cut the relay's connections mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from relay.kube.base import PODS, Obj, Resource, meta
from relay.kube.client import KubeCluster
from relay.kube.informer import Informer
from relay.settings import KubernetesSettings
from tests.support.kube_status import now

MERGE = "application/merge-patch+json"


class AdminApi:
    """Raw HTTP as the test's admin: status writes, object creation, metrics."""

    def __init__(self, url: str, token: str, ca_file: Path) -> None:
        self.url = url
        self._headers = {"Authorization": f"Bearer {token}"}
        self._ssl = ssl.create_default_context(cafile=str(ca_file))
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AdminApi:
        self._session = aiohttp.ClientSession(
            headers=self._headers, connector=aiohttp.TCPConnector(ssl=self._ssl)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        ok: tuple[int, ...] = (200, 201),
    ) -> Any:
        assert self._session is not None
        data = (
            None if body is None else (body if isinstance(body, (str, bytes)) else json.dumps(body))
        )
        async with self._session.request(
            method, self.url + path, data=data, headers={"Content-Type": content_type}
        ) as response:
            text = await response.text()
            if response.status not in ok:
                raise AssertionError(f"{method} {path}: {response.status} {text[:500]}")
            return (
                yaml.safe_load(text)
                if text and response.content_type == "application/json"
                else text
            )

    async def create(self, resource: Resource, obj: Obj) -> Obj:
        namespace = meta(obj)["namespace"]
        return dict(await self.request("POST", resource.path(namespace), obj))

    async def patch(self, resource: Resource, namespace: str, name: str, patch: Obj) -> Obj:
        return dict(
            await self.request("PATCH", resource.path(namespace, name), patch, content_type=MERGE)
        )

    async def write_status(
        self, resource: Resource, namespace: str, name: str, status: Obj
    ) -> None:
        """What a controller does: a merge patch of the ``/status`` subresource."""
        await self.request(
            "PATCH",
            resource.path(namespace, name) + "/status",
            {"status": status},
            content_type=MERGE,
        )

    async def delete(self, resource: Resource, namespace: str, name: str) -> None:
        await self.request("DELETE", resource.path(namespace, name), ok=(200, 202, 404))

    async def get(self, resource: Resource, namespace: str, name: str) -> Obj:
        return dict(await self.request("GET", resource.path(namespace, name)))

    async def watch_connections(self, resource: str) -> int:
        """Open WATCH requests on ``resource`` as the API server counts them (its /metrics)."""
        text = str(await self.request("GET", "/metrics"))
        total = 0
        for line in text.splitlines():
            if (
                line.startswith("apiserver_longrunning_gauge{")
                and 'verb="WATCH"' in line
                and f'resource="{resource}"' in line
            ):
                total += int(float(line.rsplit(" ", 1)[1]))
        return total


def kubeconfig_via(source: Path, server: str, target: Path) -> Path:
    """A copy of a kubeconfig whose cluster URL is ``server`` (the proxy)."""
    config = yaml.safe_load(source.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = server
    target.write_text(yaml.safe_dump(config))
    target.chmod(0o600)
    return target


def relay_cluster(kubeconfig: Path, **kw: Any) -> KubeCluster:
    return KubeCluster(KubernetesSettings(kubeconfig=kubeconfig, **kw))


@dataclass
class StandInKubelet:
    """Plays the kubelet for pods the real ReplicaSet controller creates: by image name, a pod
    becomes Running and Ready, or fails to pull (ErrImagePull then ImagePullBackOff, with the
    kubelet's Warning event), or crash-loops."""

    admin: AdminApi
    watcher: KubeCluster
    namespace: str = "dynamic-apps"
    delay: float = 0.2
    done: set[str] = field(default_factory=set)
    _running: set[asyncio.Task[None]] = field(default_factory=set)
    _task: asyncio.Task[None] | None = None
    _informer: Informer | None = None

    async def __aenter__(self) -> StandInKubelet:
        self._informer = Informer(self.watcher, PODS, self.namespace, watch_timeout=60)
        self._informer.start()
        self._task = asyncio.create_task(self._serve())
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in [self._task, *self._running]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._informer is not None:
            await self._informer.stop()

    async def _serve(self) -> None:
        assert self._informer is not None
        while True:
            for pod in list(self._informer.cache.values()):
                name = meta(pod)["name"]
                if name not in self.done and not meta(pod).get("deletionTimestamp"):
                    self.done.add(name)
                    task = asyncio.create_task(self._run(pod))
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
            await asyncio.sleep(0.05)

    async def _run(self, pod: Obj) -> None:
        await asyncio.sleep(self.delay)
        image = pod["spec"]["containers"][0]["image"]
        name = meta(pod)["name"]
        with contextlib.suppress(AssertionError):  # the pod may be gone already
            if "never-ready" in image:
                return
            if "pull-fails" in image:
                await self._status(
                    name,
                    _waiting(
                        "ErrImagePull", "rpc error: code = NotFound desc = manifest unknown", image
                    ),
                )
                await self._event(
                    pod,
                    "Failed",
                    f'Failed to pull image "{image}": rpc error: code = NotFound '
                    f'desc = failed to resolve reference "{image}": not found',
                )
                await asyncio.sleep(0.3)
                await self._status(
                    name, _waiting("ImagePullBackOff", f'Back-off pulling image "{image}"', image)
                )
            elif "crash" in image:
                await self._status(
                    name,
                    _waiting(
                        "CrashLoopBackOff",
                        "back-off 10s restarting failed container=app",
                        image,
                        restarts=2,
                    ),
                )
            else:
                await self._status(name, _running(image))

    async def _status(self, name: str, status: Obj) -> None:
        await self.admin.write_status(PODS, self.namespace, name, status)

    async def _event(self, pod: Obj, reason: str, message: str) -> None:
        name = meta(pod)["name"]
        await self.admin.request(
            "POST",
            f"/api/v1/namespaces/{self.namespace}/events",
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{name}.", "namespace": self.namespace},
                "involvedObject": {
                    "kind": "Pod",
                    "name": name,
                    "namespace": self.namespace,
                    "uid": meta(pod)["uid"],
                },
                "type": "Warning",
                "reason": reason,
                "message": message,
                "source": {"component": "kubelet"},
                "firstTimestamp": now(),
                "lastTimestamp": now(),
                "count": 1,
            },
        )


def _waiting(reason: str, message: str, image: str, restarts: int = 0) -> Obj:
    return {
        "phase": "Pending",
        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now()}],
        "containerStatuses": [
            {
                "name": "app",
                "ready": False,
                "restartCount": restarts,
                "image": image,
                "imageID": "",
                "state": {"waiting": {"reason": reason, "message": message}},
            }
        ],
    }


def _running(image: str) -> Obj:
    return {
        "phase": "Running",
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now()},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now()},
        ],
        "containerStatuses": [
            {
                "name": "app",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "image": image,
                "imageID": f"docker-pullable://{image}",
                "state": {"running": {"startedAt": now()}},
            }
        ],
    }


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of the API server; ``cut()`` drops every connection."""

    def __init__(self, upstream: str) -> None:
        match = re.match(r"https://([^:]+):(\d+)", upstream)
        assert match, upstream
        self._host, self._port = match.group(1), int(match.group(2))
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0
        self.down = False  # while set, new connections are refused (reset at once)

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"https://127.0.0.1:{port}"

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update({writer, up_writer})
        await asyncio.gather(
            _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.transport.abort()
