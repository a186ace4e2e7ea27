"""A real Docker Registry v2 (Debian ``docker-registry``, distribution 2.8) for tests.

    reg = Registry(tmp_path / "registry")    # picks a free 127.0.0.1 port, writes config
    reg.start()                               # serve; returns once /v2/ answers 401
    reg.host, reg.url, reg.username, reg.password, reg.password_file
    reg.stop(); reg.start()                   # same port, same storage (fault tests)

Basic auth (bcrypt htpasswd) is always on; deletes are enabled. Optional notifications endpoint
(``notify_url`` + ``notify_headers``): the registry POSTs push/pull/delete envelopes there
~40 ms after the event, retries every ``notify_backoff`` while the endpoint fails, and retries
any 4xx forever (blocking that endpoint); its queue is in memory only, so a restart drops it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support._procs import (
    LOOPBACK,
    GroupProcess,
    HttpResponse,
    ServiceError,
    basic_auth,
    clean_env,
    free_port,
    http_request,
    http_status,
    port_is_free,
    require_binary,
    wait_for,
)

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ALL_MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)

# bcrypt cost for the htpasswd entry: the registry re-checks bcrypt on EVERY authenticated
# request (no cache), so the usual cost 10-12 would add 60-250 ms per API call.
BCRYPT_COST = 5


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_htpasswd_line(username: str, password: str, cost: int = BCRYPT_COST) -> str:
    """``user:$2…`` bcrypt line; python ``bcrypt`` if importable, else ``htpasswd -Bbn``."""
    try:
        import bcrypt
    except ImportError:
        out = subprocess.run(
            [require_binary("htpasswd"), "-Bbn", "-C", str(cost), username, password],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return out.strip().splitlines()[0]
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()
    return f"{username}:{hashed}"


class Registry:
    """A ``docker-registry serve`` child on its own loopback port, state under ``base_dir``."""

    def __init__(
        self,
        base_dir: str | Path | None = None,
        *,
        username: str = "relay-ci",
        password: str | None = None,
        port: int | None = None,
        notify_url: str | None = None,
        notify_headers: Mapping[str, str] | None = None,
        notify_backoff: str = "1s",
        notify_timeout: str = "2s",
        notify_threshold: int = 3,
        startup_timeout: float = 15.0,
    ) -> None:
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="relay-registry-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.username = username
        self.password = password or secrets.token_urlsafe(18)
        self.port = port or free_port()
        self.storage_dir = self.base_dir / "storage"
        self.config_path = self.base_dir / "config.yml"
        self.htpasswd_path = self.base_dir / "htpasswd"
        self.password_file = self.base_dir / "password"
        self.log_path = self.base_dir / "registry.log"
        self.notify_url = notify_url
        self.notify_headers = dict(notify_headers or {})
        self.notify_backoff = notify_backoff
        self.notify_timeout = notify_timeout
        self.notify_threshold = notify_threshold
        self.startup_timeout = startup_timeout
        self._binary = require_binary("docker-registry")
        self._proc: GroupProcess | None = None
        self._started_once = False
        self.last_start_seconds: float | None = None
        self.storage_dir.mkdir(exist_ok=True)
        self.htpasswd_path.write_text(make_htpasswd_line(self.username, self.password) + "\n")
        self.password_file.write_text(self.password)
        self.password_file.chmod(0o600)
        self._write_config()

    # --- addresses and credentials --------------------------------------------------------

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the registry part of an image reference."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def creds(self) -> str:
        """``user:password`` as buildah/skopeo ``--creds`` want it."""
        return f"{self.username}:{self.password}"

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": basic_auth(self.username, self.password)}

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    # --- config and lifecycle -------------------------------------------------------------

    def _write_config(self) -> None:
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "fields": {"service": "registry"}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                # no blobdescriptor cache: the in-memory one can outlive a deleted blob
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": f"{LOOPBACK}:{self.port}",
                "secret": secrets.token_hex(16),
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
            "auth": {"htpasswd": {"realm": "relay-test-registry", "path": str(self.htpasswd_path)}},
            "health": {"storagedriver": {"enabled": False}},
        }
        if self.notify_url:
            config["notifications"] = {
                "events": {"includereferences": True},
                "endpoints": [
                    {
                        "name": "relay",
                        "url": self.notify_url,
                        "headers": {k: [v] for k, v in self.notify_headers.items()},
                        "timeout": self.notify_timeout,
                        "threshold": self.notify_threshold,
                        "backoff": self.notify_backoff,
                    }
                ],
            }
        # JSON is valid YAML: no YAML library needed.
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")

    def start(self) -> Registry:
        """Start (or restart on the same port and storage); returns once /v2/ answers 401."""
        if self.running:
            return self
        if self._started_once:  # a restart: same port, same storage, or fail
            if not port_is_free(self.port):
                raise ServiceError(f"registry port {self.port} is taken by something else")
            self._start_once()
            return self
        for attempt in range(3):  # first start: another free port if this one was snatched
            if attempt or not port_is_free(self.port):
                self.port = free_port()
                self._write_config()
            try:
                self._start_once()
                break
            except ServiceError:
                if attempt == 2:
                    raise
        self._started_once = True
        return self

    def _start_once(self) -> None:
        t0 = time.monotonic()
        # REGISTRY_* variables override the config file: never inherit them.
        env = clean_env(drop_prefixes=("REGISTRY_", "OTEL_"))
        proc = GroupProcess(
            "docker-registry",
            [self._binary, "serve", str(self.config_path)],
            self.log_path,
            env=env,
            cwd=self.base_dir,
        )
        proc.start()
        self._proc = proc
        try:
            wait_for(
                lambda: http_status(f"{self.url}/v2/") == 401,
                timeout=self.startup_timeout,
                what=f"docker-registry on {self.host}",
                alive=proc.death_note,
            )
        except ServiceError:
            proc.stop()
            self._proc = None
            raise
        self.last_start_seconds = time.monotonic() - t0

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def close(self) -> None:
        """Stop, and remove the state directory if this object made it."""
        self.stop()
        if self._own_dir:
            import shutil

            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def garbage_collect(self, *, delete_untagged: bool = False) -> str:
        """``docker-registry garbage-collect``, only while stopped (run live it corrupts)."""
        if self.running:
            raise ServiceError("stop the registry before garbage-collect")
        argv = [self._binary, "garbage-collect"]
        if delete_untagged:
            argv.append("--delete-untagged")
        argv.append(str(self.config_path))
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    # --- raw API helpers (Basic auth) -------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        timeout: float = 10.0,
    ) -> HttpResponse:
        """Request ``path`` (``/v2/...`` or absolute URL), with Basic auth unless ``auth=False``."""
        hdrs = dict(self.auth_headers) if auth else {}
        hdrs.update(headers or {})
        url = path if path.startswith("http") else f"{self.url}{path}"
        return http_request(method, url, data=data, headers=hdrs, timeout=timeout)

    def _expect(self, resp: HttpResponse, *ok: int, what: str) -> HttpResponse:
        if resp.status not in ok:
            raise ServiceError(f"{what}: HTTP {resp.status}: {resp.body[:500]!r}")
        return resp

    def push_blob(self, repo: str, data: bytes) -> str:
        """Upload a blob monolithically (POST then PUT ?digest=); returns its digest."""
        digest = sha256_digest(data)
        if self.request("HEAD", f"/v2/{repo}/blobs/{digest}").status == 200:
            return digest
        start = self._expect(
            self.request("POST", f"/v2/{repo}/blobs/uploads/", data=b""), 202, what="start upload"
        )
        location = start.header("location") or ""
        if location.startswith("/"):
            location = self.url + location
        sep = "&" if "?" in location else "?"
        self._expect(
            self.request(
                "PUT",
                f"{location}{sep}digest={digest}",
                data=data,
                headers={"Content-Type": "application/octet-stream"},
            ),
            201,
            what=f"upload blob {digest}",
        )
        return digest

    def put_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> str:
        """PUT a manifest/index under a tag or digest; returns the registry's digest for it."""
        resp = self._expect(
            self.request(
                "PUT",
                f"/v2/{repo}/manifests/{reference}",
                data=body,
                headers={"Content-Type": media_type},
            ),
            201,
            what=f"put manifest {repo}:{reference}",
        )
        digest = resp.header("docker-content-digest") or sha256_digest(body)
        if digest != sha256_digest(body):
            raise ServiceError(f"registry digest {digest} != sha256 of the body sent")
        return digest

    def manifest_digest(
        self, repo: str, reference: str, accept: tuple[str, ...] = ALL_MANIFEST_TYPES
    ) -> str | None:
        """``Docker-Content-Digest`` of a HEAD on the manifest, or None when it is not there."""
        resp = self.request(
            "HEAD", f"/v2/{repo}/manifests/{reference}", headers={"Accept": ", ".join(accept)}
        )
        if resp.status == 404:
            return None
        self._expect(resp, 200, what=f"HEAD manifest {repo}:{reference}")
        return resp.header("docker-content-digest")

    def get_manifest(
        self, repo: str, reference: str, accept: tuple[str, ...] = ALL_MANIFEST_TYPES
    ) -> tuple[str, dict[str, Any]]:
        """(media type, parsed body) of a manifest or index."""
        resp = self._expect(
            self.request(
                "GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": ", ".join(accept)}
            ),
            200,
            what=f"GET manifest {repo}:{reference}",
        )
        return resp.header("content-type") or "", json.loads(resp.body)

    def delete_manifest(self, repo: str, digest: str) -> int:
        """DELETE by digest (tags cannot be deleted directly); 202 when it worked."""
        return self.request("DELETE", f"/v2/{repo}/manifests/{digest}").status

    def tags(self, repo: str) -> list[str]:
        resp = self.request("GET", f"/v2/{repo}/tags/list")
        if resp.status == 404:
            return []
        self._expect(resp, 200, what=f"tags of {repo}")
        return list(json.loads(resp.body).get("tags") or [])
