"""The one interface every image builder implements, and what the backends share.

``Builder.build_and_push`` builds a context with a Dockerfile, labels the image, pushes it to
``ref`` and returns the manifest digest it pushed. Backends: ``buildah`` (daemonless, the
default), ``buildkit`` (``buildctl`` against a buildkitd), ``docker`` (a Docker daemon) and
``none`` (prebuilt images only). Registry credentials reach the tools only through files
(a 0600 auth file in the build's private directory), never through argv.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from relay.errors import Permanent, Transient
from workers.build.auth import Credentials
from workers.build.proc import LineSink, Result

_UNAUTHORIZED = re.compile(
    r"(unauthorized|authentication required|401 unauthorized|denied: requested access)",
    re.IGNORECASE,
)
_UNREACHABLE = re.compile(
    r"(connection refused|no such host|i/o timeout|connection reset|no route to host|"
    r"TLS handshake timeout|50[234] (bad gateway|service unavailable|gateway timeout))",
    re.IGNORECASE,
)


@dataclass(frozen=True, kw_only=True)
class BuildJob:
    """One build: what to build, where to push it, and a private directory for its files."""

    context_dir: Path
    dockerfile: Path
    ref: str
    labels: Mapping[str, str]
    workdir: Path


class Builder(Protocol):
    name: str

    async def build_and_push(self, job: BuildJob, log_lines: LineSink) -> str:
        """Build and push ``job.ref``; return the pushed manifest digest (``sha256:…``)."""


def write_auth_file(path: Path, creds: Credentials | None) -> Path:
    """A containers ``auth.json`` / docker ``config.json`` readable by this user only."""
    auths = {creds.host: creds.auth_config_entry()} if creds else {}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"auths": auths}, out)
    return path


def private_config_dir(workdir: Path, creds: Credentials | None) -> Path:
    """A ``DOCKER_CONFIG`` directory (0700) holding a ``config.json`` with the registry auth."""
    config_dir = workdir / "docker"
    config_dir.mkdir(mode=0o700)
    write_auth_file(config_dir / "config.json", creds)
    return config_dir


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without variables that would redirect a tool's auth or
    storage, plus ``extra``."""
    drop = ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "BUILDAH_", "CONTAINERS_", "DOCKER_HOST")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def check_step(result: Result, step: str, *, pushing: bool = False) -> None:
    """Raise the stage error a failed step means; a push failure may be the registry's."""
    if result.ok:
        return
    tail = result.tail_text()
    detail = f"{step} failed (exit {result.returncode}); last lines:\n{tail}"
    if pushing and _UNAUTHORIZED.search(tail):
        raise Permanent("unauthorized", detail)
    if pushing and _UNREACHABLE.search(tail):
        raise Transient("registry_unreachable", detail)
    raise Permanent("build_failed", detail)


def read_digest(path: Path, step: str) -> str:
    try:
        digest = path.read_text().strip()
    except OSError:
        digest = ""
    if not re.match(r"^sha256:[0-9a-f]{64}$", digest):
        raise Permanent("build_failed", f"{step} did not report the pushed digest")
    return digest
