"""A stand-in for Flux in the chaos runs: ``python -m chaos.flux --kubeconfig ADMIN --repo BARE``.

It plays source-controller and kustomize-controller as far as the relay's deploys need them,
against the real API server with an admin identity, the way the tests' stand-in does
(``tests.kube.standins``) but from the run's own GitOps repository:

- on start it applies the GitRepository and the parent Kustomization the relay is configured
  with (both ``flux-system``), as installing Flux's sync objects would;
- a GitRepository given a new ``reconcile.fluxcd.io/requestedAt`` "fetches" ``main`` (read from
  the bare repository on disk, so that a Git server outage is not also a Flux outage) and stores
  ``main@sha1:<head>`` as its artifact, Ready;
- the parent Kustomization applies (server-side) every ``<path>/<app>/ks.yaml`` of that revision
  whose Kustomization does not exist yet, as applying the apps directory would, and is Ready;
- an app's Kustomization applies its ``deployment.yaml`` of that revision into its target
  namespace, then, ``--rollout-seconds`` later, writes the Deployment's status as the deployment
  controller does once the pods are available (no kubelet runs here), and only then is Ready with
  ``lastAppliedRevision`` (the relay writes ``wait: true``: Ready once the rollout is healthy).
  Services and HTTPRoutes are not applied: nothing here reads them.

Every handled request sets ``status.lastHandledReconcileAt``. While the API server is away the
requests stay unhandled and are tried again every half second. It logs JSON lines to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog
import yaml

from chaos.checks import git
from relay.kube.base import DEPLOYMENTS, GITREPOSITORIES, KUSTOMIZATIONS, Obj, Resource, meta
from relay.kube.client import KubeCluster
from relay.kube.errors import KubeError
from relay.kube.informer import Informer
from relay.logging import configure
from relay.settings import KubernetesSettings
from tests.support.kube_status import condition, now, rolled_out
from workers.reconcile.flux import REQUESTED_AT

log = structlog.get_logger("chaos.flux")

READY_LINE = "flux stand-in started"
FIELD_MANAGER = "kustomize-controller"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
RETRY_AFTER = 0.5  # seconds before a request the API server did not take is tried again
Handler = Callable[[Obj], Awaitable[Obj]]


class Refused(Exception):
    """The API server answered a write with an error status."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text[:300]}")
        self.status = status


class AdminApi:
    """The raw writes a controller makes: server-side apply and ``/status`` merge patches."""

    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
        self.url = str(cluster["server"])
        self._ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        self._token = str(user["token"])
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AdminApi:
        context = ssl.create_default_context(cadata=self._ca)
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self._token}"},
            connector=aiohttp.TCPConnector(ssl=context),
            timeout=aiohttp.ClientTimeout(total=10.0),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def _send(self, method: str, path: str, body: Obj, content_type: str) -> Obj:
        assert self._session is not None
        headers = {"Content-Type": content_type}
        async with self._session.request(
            method, self.url + path, data=json.dumps(body), headers=headers
        ) as response:
            text = await response.text()
            if response.status >= 300:
                raise Refused(response.status, text)
            found = json.loads(text) if text else {}
            return found if isinstance(found, dict) else {}

    async def apply(self, resource: Resource, obj: Obj) -> Obj:
        """Server-side apply of ``obj`` (JSON is YAML), taking over any conflicting field."""
        md = meta(obj)
        path = resource.path(str(md["namespace"]), str(md["name"]))
        query = f"?fieldManager={FIELD_MANAGER}&force=true"
        return await self._send("PATCH", path + query, obj, APPLY)

    async def write_status(
        self, resource: Resource, namespace: str, name: str, status: Obj
    ) -> None:
        path = resource.path(namespace, name) + "/status"
        await self._send("PATCH", path, {"status": status}, MERGE)


@dataclass
class Options:
    kubeconfig: Path  # an admin's
    repo: Path  # the bare GitOps repository
    url: str  # where Flux would fetch it from (the GitRepository's spec.url)
    path: str = "kubernetes/rpi-cluster/apps/dynamic"
    namespace: str = "flux-system"
    source: str = "flux-system"
    parent: str = "flux-system"
    branch: str = "main"
    rollout_seconds: float = 1.0


@dataclass
class StandInFlux:
    opts: Options
    api: AdminApi
    cluster: KubeCluster
    _informers: dict[str, Informer] = field(default_factory=dict)
    _done: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> value
    _busy: set[tuple[str, str]] = field(default_factory=set)
    _not_before: dict[tuple[str, str], float] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _artifact: str | None = None  # the commit of the last artifact stored

    @property
    def revision(self) -> str:
        return f"{self.opts.branch}@sha1:{self._artifact}"

    async def install(self) -> None:
        """The GitRepository and the parent Kustomization, applied until the server takes them."""
        o = self.opts
        source = {
            "apiVersion": GITREPOSITORIES.api_version,
            "kind": GITREPOSITORIES.kind,
            "metadata": {"name": o.source, "namespace": o.namespace},
            "spec": {
                "interval": "10m",
                "url": o.url,
                "ref": {"branch": o.branch},
            },
        }
        parent = {
            "apiVersion": KUSTOMIZATIONS.api_version,
            "kind": KUSTOMIZATIONS.kind,
            "metadata": {"name": o.parent, "namespace": o.namespace},
            "spec": {
                "interval": "10m",
                "path": f"./{o.path.strip('/')}",
                "prune": True,
                "sourceRef": {"kind": GITREPOSITORIES.kind, "name": o.source},
            },
        }
        await self.api.apply(GITREPOSITORIES, source)
        await self.api.apply(KUSTOMIZATIONS, parent)

    async def serve(self) -> None:
        for resource in (GITREPOSITORIES, KUSTOMIZATIONS):
            informer = Informer(self.cluster, resource, self.opts.namespace, watch_timeout=60)
            informer.start()
            self._informers[resource.kind] = informer
        log.info(READY_LINE)
        try:
            while True:
                for kind, informer in self._informers.items():
                    for obj in list(informer.cache.values()):
                        self._consider(kind, obj)
                await asyncio.sleep(0.05)
        finally:
            for task in list(self._tasks):
                task.cancel()
            for informer in self._informers.values():
                await informer.stop()

    def _consider(self, kind: str, obj: Obj) -> None:
        name = str(meta(obj).get("name"))
        value = (meta(obj).get("annotations") or {}).get(REQUESTED_AT)
        key = (kind, name)
        if not value or (obj.get("status") or {}).get("lastHandledReconcileAt") == value:
            return
        if self._done.get(key) == value or key in self._busy:
            return
        if time.monotonic() < self._not_before.get(key, 0.0):
            return
        self._busy.add(key)
        task = asyncio.create_task(self._handle(kind, obj, str(value)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, kind: str, obj: Obj, value: str) -> None:
        name = str(meta(obj).get("name"))
        key = (kind, name)
        handler: Handler
        if kind == GITREPOSITORIES.kind:
            handler, resource = self._fetch, GITREPOSITORIES
        else:
            handler = self._apply_parent if name == self.opts.parent else self._apply_app
            resource = KUSTOMIZATIONS
        try:
            status = await handler(obj)
            status.update(
                lastHandledReconcileAt=value,
                observedGeneration=int(meta(obj).get("generation") or 1),
            )
            await self.api.write_status(resource, self.opts.namespace, name, status)
        except (
            Refused,
            KubeError,
            aiohttp.ClientError,
            OSError,
            TimeoutError,
            RuntimeError,
        ) as exc:
            # RuntimeError: a git command that failed; everything else: the API server
            self._not_before[key] = time.monotonic() + RETRY_AFTER
            log.info("request not handled, trying again", kind=kind, name=name, error=str(exc))
            return
        finally:
            self._busy.discard(key)
        self._done[key] = value
        log.info("request handled", kind=kind, name=name, requested_at=value)

    @staticmethod
    def _status(obj: Obj, ready: bool, reason: str, message: str, **status: Any) -> Obj:
        generation = int(meta(obj).get("generation") or 1)
        said = condition("Ready", "True" if ready else "False", reason, message, generation)
        return {**status, "conditions": [said]}

    async def _fetch(self, obj: Obj) -> Obj:
        head = (await git(self.opts.repo, "rev-parse", "--verify", self.opts.branch)).strip()
        self._artifact = head
        name = meta(obj).get("name")
        artifact = {
            "revision": self.revision,
            "path": f"gitrepository/{self.opts.namespace}/{name}/{head}.tar.gz",
            "url": f"http://source-controller.flux-system.svc/{name}/{head}.tar.gz",
            "digest": "sha256:" + "0" * 64,
            "lastUpdateTime": now(),
        }
        message = f"stored artifact for revision '{self.revision}'"
        return self._status(obj, True, "Succeeded", message, artifact=artifact)

    async def _commit(self) -> str:
        if self._artifact is None:  # a Kustomization before any fetch: fetch now
            head = await git(self.opts.repo, "rev-parse", "--verify", self.opts.branch)
            self._artifact = head.strip()
        return self._artifact

    def _applied(self, obj: Obj) -> Obj:
        return self._status(
            obj,
            True,
            "ReconciliationSucceeded",
            f"Applied revision: {self.revision}",
            lastAppliedRevision=self.revision,
            lastAttemptedRevision=self.revision,
        )

    def _failed(self, obj: Obj, reason: str, message: str) -> Obj:
        return self._status(obj, False, reason, message, lastAttemptedRevision=self.revision)

    async def _apply_parent(self, obj: Obj) -> Obj:
        commit = await self._commit()
        root = self.opts.path.strip("/")
        listing = await git(self.opts.repo, "ls-tree", "--name-only", commit, f"{root}/")
        existing = self._informers[KUSTOMIZATIONS.kind].cache
        for entry in listing.split():
            app = entry.rsplit("/", 1)[-1]
            if app in existing or entry.endswith(".yaml"):
                continue
            text = await git(self.opts.repo, "show", f"{commit}:{entry}/ks.yaml")
            await self.api.apply(KUSTOMIZATIONS, yaml.safe_load(text))
        return self._applied(obj)

    async def _apply_app(self, obj: Obj) -> Obj:
        commit = await self._commit()
        spec = obj.get("spec") or {}
        path = str(spec.get("path", "")).removeprefix("./").strip("/")
        try:
            text = await git(self.opts.repo, "show", f"{commit}:{path}/deployment.yaml")
        except RuntimeError:
            message = f"kustomization path not found: {path} at {self.revision}"
            return self._failed(obj, "ArtifactFailed", message)
        deployment = yaml.safe_load(text)
        target = spec.get("targetNamespace")
        if target:
            deployment["metadata"]["namespace"] = target
        try:
            applied = await self.api.apply(DEPLOYMENTS, deployment)
        except Refused as exc:
            if exc.status not in (400, 422):
                raise  # not an answer about the manifest: try again
            return self._failed(obj, "ReconciliationFailed", f"Deployment dry-run failed: {exc}")
        await asyncio.sleep(self.opts.rollout_seconds)
        md = meta(applied)
        await self.api.write_status(
            DEPLOYMENTS, str(md["namespace"]), str(md["name"]), rolled_out(applied)
        )
        return self._applied(obj)


async def run(opts: Options) -> None:
    settings = KubernetesSettings(kubeconfig=opts.kubeconfig)
    cluster = KubeCluster(settings)
    async with AdminApi(opts.kubeconfig) as api:
        flux = StandInFlux(opts, api, cluster)
        try:
            while True:
                try:
                    await flux.install()
                    break
                except (Refused, aiohttp.ClientError, OSError, TimeoutError) as exc:
                    if isinstance(exc, Refused) and exc.status < 500 and exc.status != 429:
                        raise  # an answer about the objects: trying again will not help
                    log.info("cannot install the Flux objects yet", error=str(exc))
                    await asyncio.sleep(RETRY_AFTER)
            await flux.serve()
        finally:
            await cluster.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", type=Path, required=True, help="an admin's kubeconfig")
    parser.add_argument("--repo", type=Path, required=True, help="the bare GitOps repository")
    parser.add_argument("--url", required=True, help="the repository's URL (spec.url)")
    parser.add_argument("--path", default=Options.path, help="the apps directory in it")
    parser.add_argument("--rollout-seconds", type=float, default=Options.rollout_seconds)
    args = parser.parse_args()
    configure(level="info", fmt="json")
    opts = Options(
        kubeconfig=args.kubeconfig,
        repo=args.repo,
        url=args.url,
        path=args.path,
        rollout_seconds=args.rollout_seconds,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(opts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
