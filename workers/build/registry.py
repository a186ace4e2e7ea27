"""A small async Docker Registry v2 client: digests, labels, tags and deletes, nothing more.

The build worker needs to pin a prebuilt image by digest, check whether a version already holds
the same source, list an app's tags for retention and delete manifests by digest. ``Registry``
is that interface; ``HttpRegistry`` implements it over aiohttp with Basic and Bearer-token auth
(``workers.build.auth``). Errors are the stage errors a person can act on:

- ``Permanent("image_not_found")``: the registry does not hold that manifest;
- ``Permanent("unauthorized")``: credentials missing, wrong, or not allowed (401/403);
- ``Transient("registry_unreachable")``: connection refused, timeouts, 5xx and 429 (retried).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlencode, urljoin

import aiohttp
import structlog

from relay.errors import Permanent, Transient
from relay.settings import RegistrySettings
from workers.build.auth import Credentials, TokenCache, parse_challenge
from workers.build.refs import ImageRef

log = structlog.get_logger(__name__)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MAX_BODY = 8 * 1024 * 1024  # manifests are capped at 4 MiB by the spec; configs are small
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class Registry(Protocol):
    """What the build worker asks of a registry."""

    async def manifest_digest(self, ref: ImageRef) -> str | None:
        """The digest ``ref`` resolves to, or None when the registry does not hold it."""

    async def image_config(self, ref: ImageRef) -> dict[str, Any] | None:
        """The image config (labels, created) of ``ref``; an index's first linux image's."""

    async def tags(self, host: str, repo: str) -> list[str]:
        """Every tag of a repository ([] when the repository does not exist)."""

    async def delete_manifest(self, host: str, repo: str, digest: str) -> bool:
        """Delete by digest; False when it was already gone."""


@dataclass(frozen=True)
class _Response:
    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str

    def error_text(self) -> str:
        """The registry's own error message (``errors[0].message``), else the body's start."""
        try:
            errors = json.loads(self.body).get("errors") or []
            return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or ""
        except (ValueError, AttributeError):
            return self.body[:200].decode("utf-8", "replace")


def registry_host(settings: RegistrySettings) -> str:
    """``host[:port]`` of the configured registry, whatever scheme was written before it."""
    return settings.url.split("://", 1)[-1].rstrip("/")


def pull_scope(repo: str) -> str:
    return f"repository:{repo}:pull"


def delete_scope(repo: str) -> str:
    return f"repository:{repo}:delete"


class HttpRegistry:
    """``Registry`` over HTTP(S). Use as ``async with HttpRegistry(...) as registry:``."""

    def __init__(
        self, settings: RegistrySettings, *, tokens: TokenCache | None = None, timeout: float = 30
    ) -> None:
        self._host = registry_host(settings)
        self._insecure = settings.insecure
        self._creds = credentials(settings, self._host)
        self._tokens = tokens or TokenCache()
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 10.0))
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpRegistry:
        self._session = aiohttp.ClientSession(timeout=self._timeout, auto_decompress=True)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- the Registry interface ---------------------------------------------------------------

    async def manifest_digest(self, ref: ImageRef) -> str | None:
        path = f"/v2/{ref.repo}/manifests/{ref.reference}"
        resp = await self._call(
            "HEAD", ref.api_host, path, scope=pull_scope(ref.repo), accept=ACCEPT
        )
        if resp.status == 404:
            return None
        _expect(resp, 200, what=f"manifest of {ref}")
        digest = resp.headers.get("docker-content-digest")
        if digest:
            return digest
        found = await self._manifest(ref.api_host, ref.repo, ref.reference)  # HEAD without it
        return found[0] if found else None

    async def image_config(self, ref: ImageRef) -> dict[str, Any] | None:
        found = await self._manifest(ref.api_host, ref.repo, ref.reference)
        if found is None:
            return None
        _, media_type, body = found
        if media_type in INDEX_TYPES or "manifests" in body:
            child = _pick_child(body)
            if child is None:
                return None
            found = await self._manifest(ref.api_host, ref.repo, child)
            if found is None:
                return None
            body = found[2]
        config_digest = (body.get("config") or {}).get("digest")
        if not config_digest:
            return None
        return await self._blob_json(ref.api_host, ref.repo, config_digest)

    async def tags(self, host: str, repo: str) -> list[str]:
        found: list[str] = []
        path: str | None = f"/v2/{repo}/tags/list?n=1000"
        while path:
            resp = await self._call("GET", host, path, scope=pull_scope(repo))
            if resp.status == 404:
                return found
            _expect(resp, 200, what=f"tags of {host}/{repo}")
            found.extend(_json(resp).get("tags") or [])
            path = _next_link(resp.headers.get("link"))
        return found

    async def delete_manifest(self, host: str, repo: str, digest: str) -> bool:
        path = f"/v2/{repo}/manifests/{digest}"
        resp = await self._call("DELETE", host, path, scope=delete_scope(repo))
        if resp.status == 404:
            return False
        if resp.status == 405:
            raise Permanent(
                "registry_delete_disabled",
                f"{host} refuses deletes; set storage.delete.enabled: true in its config",
            )
        _expect(resp, 202, 200, what=f"delete of {host}/{repo}@{digest}")
        return True

    # --- manifests and blobs ------------------------------------------------------------------

    async def _manifest(
        self, host: str, repo: str, reference: str
    ) -> tuple[str, str, dict[str, Any]] | None:
        """(digest, media type, body) of a manifest, or None when it is not there."""
        path = f"/v2/{repo}/manifests/{reference}"
        resp = await self._call("GET", host, path, scope=pull_scope(repo), accept=ACCEPT)
        if resp.status == 404:
            return None
        _expect(resp, 200, what=f"manifest {host}/{repo}:{reference}")
        body = _json(resp)
        media_type = resp.headers.get("content-type", "").split(";")[0].strip()
        digest = resp.headers.get("docker-content-digest") or _sha256(resp.body)
        return digest, body.get("mediaType") or media_type, body

    async def _blob_json(self, host: str, repo: str, digest: str) -> dict[str, Any] | None:
        resp = await self._call("GET", host, f"/v2/{repo}/blobs/{digest}", scope=pull_scope(repo))
        if resp.status == 404:
            return None
        _expect(resp, 200, what=f"blob {host}/{repo}@{digest}")
        return _json(resp)

    # --- requests with authentication -----------------------------------------------------------

    async def _call(
        self, method: str, host: str, path: str, *, scope: str, accept: str | None = None
    ) -> _Response:
        headers = {"Accept": accept} if accept else {}
        auth = self._known_auth(host, scope)
        resp = await self._send(method, self._url(host, path), headers, auth)
        if resp.status == 401:
            self._tokens.forget(host, scope)
            auth = await self._answer(host, scope, resp.headers.get("www-authenticate"))
            resp = await self._send(method, self._url(host, path), headers, auth)
            if resp.status == 401:
                raise Permanent("unauthorized", f"{host} refused the credentials: {_why(resp)}")
        if resp.status == 403:
            raise Permanent("unauthorized", f"{host} denied {method} {path}: {_why(resp)}")
        return resp

    def _known_auth(self, host: str, scope: str) -> str | None:
        token = self._tokens.get(host, scope)
        if token is not None:
            return f"Bearer {token}"
        creds = self._creds_for(host)
        if creds is not None and host in self._tokens.basic_hosts:
            return creds.basic_header()
        return None

    async def _answer(self, host: str, scope: str, header: str | None) -> str:
        challenge = parse_challenge(header)
        creds = self._creds_for(host)
        if challenge is not None and challenge.scheme == "basic":
            if creds is None:
                raise Permanent("unauthorized", f"{host} needs credentials (registry.username)")
            self._tokens.basic_hosts.add(host)
            return creds.basic_header()
        if challenge is not None and challenge.scheme == "bearer":
            return "Bearer " + await self._fetch_token(host, scope, challenge.params)
        raise Permanent("unauthorized", f"{host} answered 401 with no usable challenge")

    async def _fetch_token(self, host: str, scope: str, params: Mapping[str, str]) -> str:
        realm = params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise Permanent("unauthorized", f"{host} sent a token realm that is not a URL")
        query = {k: v for k, v in (("service", params.get("service")),) if v}
        query["scope"] = params.get("scope") or scope
        creds = self._creds_for(host)
        auth = creds.basic_header() if creds and self._may_send(realm) else None
        resp = await self._send("GET", _with_query(realm, query), {}, auth)
        if resp.status in (401, 403):
            raise Permanent("unauthorized", f"the token service of {host} refused: {_why(resp)}")
        _expect(resp, 200, what=f"token from {realm}")
        data = _json(resp)
        token = data.get("token") or data.get("access_token")
        if not isinstance(token, str) or not token:
            raise Transient("registry_unreachable", f"the token service of {host} sent no token")
        self._tokens.put(host, scope, token, _number(data.get("expires_in")))
        return token

    async def _send(
        self, method: str, url: str, headers: Mapping[str, str], auth: str | None
    ) -> _Response:
        """One request; follows redirects itself, never carrying credentials across them."""
        session = self._require_session()
        sent = {**headers, **({"Authorization": auth} if auth else {})}
        for _ in range(5):
            resp = await self._once(session, method, url, sent)
            location = resp.headers.get("location")
            if resp.status not in _REDIRECTS or not location or method == "DELETE":
                return resp
            url = urljoin(url, location)
            sent = dict(headers)
        return resp

    async def _once(
        self, session: aiohttp.ClientSession, method: str, url: str, headers: Mapping[str, str]
    ) -> _Response:
        try:
            async with session.request(
                method, url, headers=dict(headers), allow_redirects=False
            ) as raw:
                body = await raw.content.read(MAX_BODY) if method != "HEAD" else b""
                resp = _Response(
                    raw.status, {k.lower(): v for k, v in raw.headers.items()}, body, url
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Transient(
                "registry_unreachable", f"{method} {_safe(url)}: {_describe(exc)}"
            ) from None
        log.debug("registry request", method=method, url=_safe(url), status=resp.status)
        if resp.status >= 500 or resp.status == 429:
            raise Transient(
                "registry_unreachable", f"{method} {_safe(url)}: HTTP {resp.status} {_why(resp)}"
            )
        return resp

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("HttpRegistry is used outside 'async with'")
        return self._session

    def _url(self, host: str, path: str) -> str:
        scheme = "http" if self._insecure and host == self._host else "https"
        return f"{scheme}://{host}{path}"

    def _creds_for(self, host: str) -> Credentials | None:
        return self._creds if self._creds is not None and host == self._creds.host else None

    def _may_send(self, realm: str) -> bool:
        return realm.startswith("https://") or self._insecure


def credentials(settings: RegistrySettings, host: str) -> Credentials | None:
    if settings.username and settings.password is not None:
        return Credentials(host=host, username=settings.username, password=settings.password)
    return None


def _expect(resp: _Response, *ok: int, what: str) -> None:
    if resp.status not in ok:
        raise Transient(
            "registry_unreachable", f"{what}: unexpected HTTP {resp.status} {_why(resp)}"
        )


def _why(resp: _Response) -> str:
    return resp.error_text() or f"HTTP {resp.status}"


def _json(resp: _Response) -> dict[str, Any]:
    try:
        data = json.loads(resp.body)
    except ValueError:
        raise Transient("registry_unreachable", f"{_safe(resp.url)} sent invalid JSON") from None
    return data if isinstance(data, dict) else {}


def _pick_child(index: Mapping[str, Any]) -> str | None:
    """An index's first linux image (attestation manifests have os "unknown")."""
    children = [m for m in index.get("manifests") or [] if isinstance(m, dict)]
    linux = [m for m in children if (m.get("platform") or {}).get("os", "linux") == "linux"]
    chosen = (linux or children)[:1]
    digest = chosen[0].get("digest") if chosen else None
    return digest if isinstance(digest, str) else None


def _next_link(header: str | None) -> str | None:
    """The path of a ``Link: </v2/…>; rel="next"`` header."""
    if not header or 'rel="next"' not in header:
        return None
    start, end = header.find("<"), header.find(">")
    return header[start + 1 : end] if 0 <= start < end else None


def _with_query(url: str, query: Mapping[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(query)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _safe(url: str) -> str:
    """A URL without its query (token requests carry scopes, never secrets, but keep it short)."""
    return url.split("?", 1)[0]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
