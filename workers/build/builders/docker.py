"""``docker``: the docker CLI against a daemon (docker-compose set-ups).

``docker build`` then ``docker push``; the pushed digest is read from the push output
(``…: digest: sha256:… size: …``). Credentials: a ``config.json`` in a private ``DOCKER_CONFIG``.
A plain-HTTP registry must be listed in the daemon's ``insecure-registries``: the CLI cannot
choose that per call. The built image is removed from the daemon after the push.
"""

from __future__ import annotations

import asyncio
import re
import shutil

from relay.errors import Permanent
from relay.settings import BuilderSettings
from workers.build.auth import Credentials
from workers.build.builders.base import BuildJob, check_step, clean_env, private_config_dir
from workers.build.proc import ArgvRecorder, LineSink, run

_PUSHED = re.compile(r"digest: (sha256:[0-9a-f]{64})")


class DockerBuilder:
    name = "docker"

    def __init__(
        self,
        settings: BuilderSettings,
        *,
        creds: Credentials | None,
        recorder: ArgvRecorder | None = None,
    ) -> None:
        self._settings = settings
        self._creds = creds
        self._recorder = recorder
        self._binary = shutil.which("docker")

    async def build_and_push(self, job: BuildJob, log_lines: LineSink) -> str:
        if self._binary is None:
            raise Permanent(
                "builder_unavailable", "builder.backend is docker but it is not installed"
            )
        config_dir = await asyncio.to_thread(private_config_dir, job.workdir, self._creds)
        env = clean_env({"DOCKER_CONFIG": str(config_dir)})
        build = await run(
            [self._binary, *self.build_args(job)],
            env=env,
            on_line=log_lines,
            recorder=self._recorder,
        )
        check_step(build, "docker build")
        push = await run(
            [self._binary, "push", job.ref], env=env, on_line=log_lines, recorder=self._recorder
        )
        check_step(push, "docker push", pushing=True)
        await run(
            [self._binary, "image", "rm", job.ref],
            env=env,
            on_line=log_lines,
            recorder=self._recorder,
        )
        found = [m.group(1) for line in push.tail if (m := _PUSHED.search(line))]
        if not found:
            raise Permanent("build_failed", "docker push did not report the pushed digest")
        return found[-1]

    def build_args(self, job: BuildJob) -> list[str]:
        labels = [a for k, v in sorted(job.labels.items()) for a in ("--label", f"{k}={v}")]
        platform = ["--platform", self._settings.platform] if self._settings.platform else []
        return [
            "build",
            "--file",
            str(job.dockerfile),
            "--tag",
            job.ref,
            *platform,
            *labels,
            str(job.context_dir),
        ]
