"""``docker``: the docker CLI against a daemon (docker-compose set-ups).

``docker build`` then ``docker push``; the pushed digest is read from the push output
(``…: digest: sha256:… size: …``). Credentials: a ``config.json`` in a private ``DOCKER_CONFIG``.
A plain-HTTP registry must be listed in the daemon's ``insecure-registries``: the CLI cannot
choose that per call. The built image is removed from the daemon after the push.
"""

from __future__ import annotations

import asyncio
import re

from relay.errors import Permanent
from workers.build.builders.base import BuildJob, ToolBuilder, clean_env, private_config_dir
from workers.build.proc import LineSink

_PUSHED = re.compile(r"digest: (sha256:[0-9a-f]{64})")


class DockerBuilder(ToolBuilder):
    """``insecure`` is not used: the daemon's ``insecure-registries`` decides."""

    name = "docker"
    tool = "docker"

    async def build_and_push(self, job: BuildJob, log_lines: LineSink) -> str:
        binary = self._tool_path()
        config_dir = await asyncio.to_thread(private_config_dir, job.workdir, self._creds)
        env = clean_env({"DOCKER_CONFIG": str(config_dir)})
        await self._step("docker build", [binary, *self.build_args(job)], env, log_lines)
        push = await self._step(
            "docker push", [binary, "push", job.ref], env, log_lines, pushing=True
        )
        await self._run([binary, "image", "rm", job.ref], env, log_lines)
        found = [m.group(1) for line in push.tail if (m := _PUSHED.search(line))]
        if not found:
            raise Permanent("build_failed", "docker push did not report the pushed digest")
        return found[-1]

    def build_args(self, job: BuildJob) -> list[str]:
        return [
            "build",
            "--file",
            str(job.dockerfile),
            "--tag",
            job.ref,
            *self._platform_and_labels(job),
            str(job.context_dir),
        ]
