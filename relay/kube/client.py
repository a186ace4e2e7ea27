"""The ``Cluster`` interface over kubernetes-asyncio: the one module that imports it.

Credentials come from ``settings.kubernetes.kubeconfig`` (and ``context``) or, without one, from
the pod's service account. Every call asks for the raw JSON (``_preload_content=False``) so
that nothing is decoded into generated models, and maps failures onto ``relay.kube.errors``.

Warm connection: a push often comes after minutes of quiet, and a request on a new connection
pays TCP and a TLS handshake (6-10 ms more per patch on loopback here, more under load).
After ``kubernetes.keepalive_s`` without a call the client sends ``GET /version`` (readable by
every authenticated user; any answer will do), so a pooled connection stays open for the next
patch. Watches hold connections of their own and do not count.

Patch content type: kubernetes-asyncio's ``select_header_content_type`` picks
``application/json-patch+json`` for a custom-object PATCH whose body is a dict (the first type
the endpoint lists), which the API server would refuse for a dict body; so every patch here
forces ``application/merge-patch+json`` with ``_content_type``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, cast

import aiohttp
import structlog
import yaml
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.config import incluster_config
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.config.kube_config import KubeConfigLoader

from relay.kube.base import Obj, ObjectList, Resource, WatchEvent
from relay.kube.errors import Forbidden, KubeError, Unreachable, from_status
from relay.settings import KubernetesSettings

log = structlog.get_logger(__name__)

MERGE_PATCH = "application/merge-patch+json"
_NETWORK_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)
# Built-in kinds served by typed API classes: plural -> (API class, snake-case singular).
_TYPED: dict[str, tuple[Callable[[k8s.ApiClient], Any], str]] = {
    "deployments": (k8s.AppsV1Api, "deployment"),
    "replicasets": (k8s.AppsV1Api, "replica_set"),
    "pods": (k8s.CoreV1Api, "pod"),
    "events": (k8s.CoreV1Api, "event"),
}


class KubeCluster:
    """A lazily connected API client; safe to share by every task of a process."""

    def __init__(self, settings: KubernetesSettings, *, request_timeout: float = 15.0) -> None:
        self._settings = settings
        self._timeout = request_timeout
        self._api: k8s.ApiClient | None = None
        self._lock = asyncio.Lock()
        self._warmer: asyncio.Task[None] | None = None
        self._last_call = time.monotonic()
        self.open_watches = 0
        self.pings = 0

    async def get(self, resource: Resource, namespace: str, name: str) -> Obj:
        what = f"get {resource.kind} {namespace}/{name}"
        return await self._call(what, await self._op(resource, "read", namespace, name))

    async def patch_merge(
        self, resource: Resource, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> Obj:
        what = f"patch {resource.kind} {namespace}/{name}"
        op = await self._op(resource, "patch", namespace, name)
        return await self._call(what, partial(op, dict(patch), _content_type=MERGE_PATCH))

    async def list(
        self,
        resource: Resource,
        namespace: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> ObjectList:
        what = f"list {resource.plural} in {namespace}"
        op = await self._op(resource, "list", namespace)
        selectors = _only_set(label_selector=label_selector, field_selector=field_selector)
        body = await self._call(what, partial(op, **selectors))
        version = str(body.get("metadata", {}).get("resourceVersion", ""))
        return ObjectList(items=list(body.get("items") or []), resource_version=version)

    async def watch(
        self,
        resource: Resource,
        namespace: str,
        *,
        resource_version: str,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
        opened: Callable[[], None] | None = None,
    ) -> AsyncGenerator[WatchEvent, None]:
        what = f"watch {resource.plural} in {namespace}"
        op = await self._op(resource, "list", namespace)
        response = await self._open_watch(
            what, op, resource_version, label_selector, timeout_seconds
        )
        self.open_watches += 1
        try:
            if opened is not None:
                opened()
            async for line in response.content:
                if line.strip():
                    yield _watch_event(line, what)
        except _NETWORK_ERRORS as exc:
            raise Unreachable(f"{what}: stream broke: {_describe(exc)}") from exc
        finally:
            self.open_watches -= 1
            response.close()

    async def close(self) -> None:
        warmer, self._warmer = self._warmer, None
        if warmer is not None:
            warmer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warmer
        if self._api is not None:
            await self._api.close()
            self._api = None

    # --- internals --------------------------------------------------------------------------
    async def _open_watch(
        self, what: str, op: Any, version: str, selector: str | None, seconds: int
    ) -> aiohttp.ClientResponse:
        # The server ends the watch after timeout_seconds; the client gives it a margin more.
        read_timeout = aiohttp.ClientTimeout(connect=self._timeout, sock_read=seconds + 30)
        try:
            response: aiohttp.ClientResponse = await op(
                watch=True,
                allow_watch_bookmarks=True,
                resource_version=version,
                timeout_seconds=seconds,
                _preload_content=False,
                _request_timeout=read_timeout,
                **_only_set(label_selector=selector),
            )
        except _NETWORK_ERRORS as exc:
            raise Unreachable(f"{what}: {_describe(exc)}") from exc
        if response.status >= 400:
            body = await _read(response, what)
            raise from_status(response.status, body, what=what)
        return response

    async def _call(self, what: str, op: Callable[..., Awaitable[Any]]) -> Obj:
        try:
            response = await op(_preload_content=False, _request_timeout=self._timeout)
        except _NETWORK_ERRORS as exc:
            raise Unreachable(f"{what}: {_describe(exc)}") from exc
        body = await _read(response, what)
        self._last_call = time.monotonic()
        if response.status >= 400:
            raise from_status(response.status, body, what=what)
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            raise KubeError(f"{what}: answer is not JSON", status=response.status) from exc
        return parsed if isinstance(parsed, dict) else {}

    async def _op(self, resource: Resource, verb: str, namespace: str, name: str = "") -> Any:
        api = await self._client()
        if resource.plural in _TYPED and resource.group in ("", "apps"):
            api_class, singular = _TYPED[resource.plural]
            method = getattr(api_class(api), f"{verb}_namespaced_{singular}")
            return partial(method, name, namespace) if name else partial(method, namespace)
        custom = k8s.CustomObjectsApi(api)
        args = (resource.group, resource.version, namespace, resource.plural)
        method = getattr(custom, f"{'get' if verb == 'read' else verb}_namespaced_custom_object")
        return partial(method, *args, name) if name else partial(method, *args)

    async def _client(self) -> k8s.ApiClient:
        async with self._lock:
            if self._api is None:
                try:
                    configuration = await self._configuration()
                except (ConfigException, OSError, ValueError, yaml.YAMLError) as exc:
                    # No identity to speak with: as good as refused, and retrying will not help.
                    raise Forbidden(f"no usable Kubernetes credentials: {exc}") from exc
                self._api = k8s.ApiClient(configuration=configuration)
                _ignore_environment(self._api)
                self._keep_warm(self._api)
            return self._api

    def _keep_warm(self, api: k8s.ApiClient) -> None:
        every = self._settings.keepalive_s
        if every <= 0:
            return
        connector = getattr(getattr(api.rest_client, "pool_manager", None), "connector", None)
        if connector is not None and hasattr(connector, "_keepalive_timeout"):
            # The warm connection is used every keepalive_s: aiohttp keeps idle ones twice that.
            connector._keepalive_timeout = 2 * every
        self._last_call = time.monotonic()
        self._warmer = asyncio.create_task(self._warm(api, every), name="kube-keepalive")

    async def _warm(self, api: k8s.ApiClient, every: float) -> None:
        version = k8s.VersionApi(api)
        while True:
            await asyncio.sleep(max(0.0, self._last_call + every - time.monotonic()))
            if time.monotonic() - self._last_call < every:
                continue  # a call was made meanwhile: that connection is warm
            self._last_call = time.monotonic()
            try:
                response = await version.get_code(
                    _preload_content=False, _request_timeout=self._timeout
                )
                await _read(cast(aiohttp.ClientResponse, response), "get /version")
                self.pings += 1
            except (*_NETWORK_ERRORS, KubeError) as exc:
                log.debug("kubernetes keep-alive failed", error=_describe(exc))

    async def _configuration(self) -> k8s.Configuration:
        configuration = k8s.Configuration()
        path = self._settings.kubeconfig
        if path is None:
            await asyncio.to_thread(
                incluster_config.load_incluster_config, client_configuration=configuration
            )
            log.info("kubernetes: in-cluster service account")
            return configuration
        raw = await asyncio.to_thread(_read_kubeconfig, path)
        loader = KubeConfigLoader(
            config_dict=raw,
            active_context=self._settings.context,
            config_base_path=str(path.parent),
        )
        await loader.load_and_set(configuration)
        log.info("kubernetes: kubeconfig", path=str(path), server=configuration.host)
        return configuration


def _ignore_environment(api: k8s.ApiClient) -> None:
    """No ~/.netrc and no *_PROXY variables for API calls: kubernetes-asyncio's session trusts
    the environment, which makes aiohttp hop to a thread twice per request (netrc, proxy
    lookup) and could send in-cluster calls to an egress proxy. A kubeconfig ``proxy-url`` is
    still honoured (it is passed per request)."""
    session = getattr(api.rest_client, "pool_manager", None)
    if session is not None and hasattr(session, "_trust_env"):
        session._trust_env = False


def _read_kubeconfig(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


async def _read(response: aiohttp.ClientResponse, what: str) -> bytes:
    try:
        return await response.read()
    except _NETWORK_ERRORS as exc:
        raise Unreachable(f"{what}: {_describe(exc)}") from exc
    finally:
        response.release()


def _watch_event(line: bytes, what: str) -> WatchEvent:
    try:
        raw = json.loads(line)
        kind, obj = raw["type"], raw["object"]
    except (ValueError, KeyError, TypeError) as exc:
        raise KubeError(f"{what}: malformed watch event") from exc
    if kind == "ERROR":
        # A Status object: 410 (resourceVersion compacted away) becomes Gone.
        raise from_status(int(obj.get("code") or 500), json.dumps(obj), what=what)
    return WatchEvent(kind, obj)


def _only_set(**values: str | None) -> dict[str, str]:
    return {k: v for k, v in values.items() if v is not None}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
