"""The one interface every image builder implements, and what the backends share.

``Builder.build_and_push`` builds a context with a Dockerfile, labels the image, pushes it to
``ref`` and returns the manifest digest it pushed. Backends: ``buildah`` (daemonless, the
default), ``buildkit`` (``buildctl`` against a buildkitd), ``docker`` (a Docker daemon) and
``none`` (prebuilt images only). Registry credentials reach the tools only through files
(a 0600 auth file in the build's private directory), never through argv. The three command-line
backends derive from ``ToolBuilder``: settings, credentials, the registry's TLS choice, the argv
recorder and the tool's path are kept the same way for each.
"""

from __future__ import annotations

import abc
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from relay.errors import Permanent, Transient
from relay.settings import BuilderSettings
from workers.build.auth import Credentials
from workers.build.proc import ArgvRecorder, LineSink, Result, run

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


class ToolBuilder(abc.ABC):
    """A backend that drives one command-line tool (``tool``), found on ``PATH`` once.

    ``insecure`` (a plain-HTTP registry) is for the backends that can choose TLS per call;
    ``recorder`` sees every argv spawned.
    """

    name: str
    tool: ClassVar[str]
    platform_flag: ClassVar[tuple[str, str]] = ("--platform", "")  # the flag, a value prefix
    label_flag: ClassVar[tuple[str, str]] = ("--label", "")

    def __init__(
        self,
        settings: BuilderSettings,
        *,
        creds: Credentials | None,
        insecure: bool = False,
        recorder: ArgvRecorder | None = None,
    ) -> None:
        self._settings = settings
        self._creds = creds
        self._insecure = insecure
        self._recorder = recorder
        self._binary = shutil.which(self.tool)

    @abc.abstractmethod
    async def build_and_push(self, job: BuildJob, log_lines: LineSink) -> str:
        """``Builder.build_and_push``."""

    def _tool_path(self) -> str:
        """The tool's path; ``builder_unavailable`` when it is not installed."""
        if self._binary is None:
            what = "it" if self.tool == self.name else self.tool
            raise Permanent(
                "builder_unavailable", f"builder.backend is {self.name} but {what} is not installed"
            )
        return self._binary

    def _platform_and_labels(self, job: BuildJob) -> list[str]:
        """``builder.platform`` (when set) and the job's labels, sorted, as the tool spells them."""
        platform = [self._settings.platform] if self._settings.platform else []
        labels = [f"{k}={v}" for k, v in sorted(job.labels.items())]
        return [*_flagged(self.platform_flag, platform), *_flagged(self.label_flag, labels)]

    async def _run(
        self, argv: Sequence[str], env: Mapping[str, str], log_lines: LineSink
    ) -> Result:
        return await run(argv, env=env, on_line=log_lines, recorder=self._recorder)

    async def _step(
        self,
        step: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_lines: LineSink,
        *,
        pushing: bool = False,
    ) -> Result:
        """Run one step; a failure raises the stage error ``check_step`` gives it."""
        result = await self._run(argv, env, log_lines)
        check_step(result, step, pushing=pushing)
        return result


def _flagged(flag: tuple[str, str], values: Sequence[str]) -> list[str]:
    name, prefix = flag
    return [arg for value in values for arg in (name, prefix + value)]


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
