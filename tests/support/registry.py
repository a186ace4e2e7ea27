"""A real Docker Registry v2 (Debian ``docker-registry``, distribution 2.8) for tests.

    reg = Registry(tmp_path / "registry")    # picks a free 127.0.0.1 port, writes config
    reg.start()                               # serve; returns once /v2/ answers 401
    with Registry(...) as reg: ...            # start, then close (stop, remove an own dir)
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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support._http import HttpResponse, http_request, http_status
from tests.support._procs import (
    LOOPBACK,
    GroupProcess,
    LoopbackService,
    ServiceError,
    clean_env,
    require_binary,
    wait_for,
)

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ALL_MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Registry(LoopbackService):
    """A ``docker-registry serve`` child on its own loopback port, state under ``base_dir``."""

    kind = "registry"
    dir_prefix = "relay-registry-"
    secret_name = "password"

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
        super().__init__(
            base_dir,
            username=username,
            password=password,
            port=port,
            startup_timeout=startup_timeout,
        )
        self.password_file = self.secret_file
        self.storage_dir = self.base_dir / "storage"
        self.config_path = self.base_dir / "config.yml"
        self.log_path = self.base_dir / "registry.log"
        self.notify_url = notify_url
        self.notify_headers = dict(notify_headers or {})
        self.notify_backoff = notify_backoff
        self.notify_timeout = notify_timeout
        self.notify_threshold = notify_threshold
        self._binary = require_binary("docker-registry")
        self.storage_dir.mkdir(exist_ok=True)
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

    def _on_new_port(self) -> None:
        self._write_config()  # it names the port

    def _launch(self) -> None:
        # REGISTRY_* variables override the config file: never inherit them.
        env = clean_env(drop_prefixes=("REGISTRY_", "OTEL_"))
        proc = self._spawn(
            GroupProcess(
                "docker-registry",
                [self._binary, "serve", str(self.config_path)],
                self.log_path,
                env=env,
                cwd=self.base_dir,
            )
        )
        wait_for(
            lambda: http_status(f"{self.url}/v2/") == 401,
            timeout=self.startup_timeout,
            what=f"docker-registry on {self.host}",
            alive=proc.death_note,
        )

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
