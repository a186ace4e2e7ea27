"""``buildkit``: ``buildctl`` against a buildkitd (rootless, the in-cluster choice).

The Dockerfile frontend builds the context and the image exporter pushes it
(``--output type=image,name=…,push=true``); the pushed digest comes from ``--metadata-file``.
``builder.platform`` becomes ``--opt platform=…`` (``linux/arm64`` for Raspberry Pi nodes).
Registry credentials: a ``config.json`` in a private ``DOCKER_CONFIG`` directory.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from relay.errors import Permanent
from workers.build.builders.base import BuildJob, ToolBuilder, clean_env, private_config_dir
from workers.build.proc import LineSink


class BuildkitBuilder(ToolBuilder):
    name = "buildkit"
    tool = "buildctl"
    platform_flag = ("--opt", "platform=")
    label_flag = ("--opt", "label:")

    async def build_and_push(self, job: BuildJob, log_lines: LineSink) -> str:
        binary = self._tool_path()
        config_dir = await asyncio.to_thread(private_config_dir, job.workdir, self._creds)
        metadata = job.workdir / "metadata.json"
        env = clean_env({"DOCKER_CONFIG": str(config_dir)})
        argv = [binary, *self.build_args(job, metadata)]
        await self._step("buildctl build", argv, env, log_lines, pushing=True)
        return _metadata_digest(metadata)

    def build_args(self, job: BuildJob, metadata: Path) -> list[str]:
        output = f"type=image,name={job.ref},push=true"
        if self._insecure:
            output += ",registry.insecure=true"
        return [
            "--addr",
            self._settings.buildkit_addr,
            "build",
            "--frontend",
            "dockerfile.v0",
            "--local",
            f"context={job.context_dir}",
            "--local",
            f"dockerfile={job.dockerfile.parent}",
            "--opt",
            f"filename={job.dockerfile.name}",
            *self._platform_and_labels(job),
            "--output",
            output,
            "--metadata-file",
            str(metadata),
        ]


def _metadata_digest(path: Path) -> str:
    try:
        digest = json.loads(path.read_text()).get("containerimage.digest", "")
    except (OSError, ValueError, AttributeError):
        digest = ""
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        raise Permanent("build_failed", "buildctl did not report the pushed digest")
    return digest
