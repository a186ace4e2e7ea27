"""Image builders behind one interface (``base.Builder``), chosen by ``builder.backend``."""

from __future__ import annotations

from relay.errors import Permanent
from relay.settings import Settings
from workers.build.builders.base import Builder, BuildJob, ToolBuilder
from workers.build.builders.buildah import BuildahBuilder
from workers.build.builders.buildkit import BuildkitBuilder
from workers.build.builders.docker import DockerBuilder
from workers.build.proc import ArgvRecorder, LineSink
from workers.build.registry import credentials, registry_host

__all__ = ["BuildJob", "Builder", "NoBuilder", "make_builder"]


class NoBuilder:
    """``none``: this relay deploys prebuilt images only."""

    name = "none"

    async def build_and_push(self, job: BuildJob, log_lines: LineSink) -> str:
        raise Permanent(
            "builder_disabled",
            "builder.backend is none: deploy a prebuilt image (image) instead of a source",
        )


_BACKENDS: dict[str, type[ToolBuilder]] = {
    "buildah": BuildahBuilder,
    "buildkit": BuildkitBuilder,
    "docker": DockerBuilder,
}


def make_builder(settings: Settings, *, recorder: ArgvRecorder | None = None) -> Builder:
    registry = settings.deploy.registry
    creds = credentials(registry, registry_host(registry))
    backend = _BACKENDS.get(settings.deploy.builder.backend)
    if backend is None:
        return NoBuilder()
    return backend(
        settings.deploy.builder, creds=creds, insecure=registry.insecure, recorder=recorder
    )
