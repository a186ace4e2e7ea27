"""Image builders behind one interface (``base.Builder``), chosen by ``builder.backend``."""

from __future__ import annotations

from relay.errors import Permanent
from relay.settings import Settings
from workers.build.builders.base import Builder, BuildJob
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


def make_builder(settings: Settings, *, recorder: ArgvRecorder | None = None) -> Builder:
    registry = settings.deploy.registry
    builder = settings.deploy.builder
    creds = credentials(registry, registry_host(registry))
    match builder.backend:
        case "buildah":
            return BuildahBuilder(
                builder, creds=creds, insecure=registry.insecure, recorder=recorder
            )
        case "buildkit":
            return BuildkitBuilder(
                builder, creds=creds, insecure=registry.insecure, recorder=recorder
            )
        case "docker":
            return DockerBuilder(builder, creds=creds, recorder=recorder)
        case _:
            return NoBuilder()
