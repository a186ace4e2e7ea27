"""``buildah``: daemonless builds (``bud --isolation chroot``) and pushes (``push --digestfile``).

All calls share one storage root, run root and storage driver: mixing drivers on one root
breaks it. The driver is ``builder.storage_driver`` when set, else the one recorded in the root
by an earlier run, else detected once: overlay when a scratch container can be mounted with it
in a throw-away root, vfs otherwise (slower, works everywhere). The built image is removed from
local storage after the push; base images stay cached.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import structlog

from relay.settings import BuilderSettings
from workers.build.auth import Credentials
from workers.build.builders.base import (
    BuildJob,
    ToolBuilder,
    clean_env,
    read_digest,
    write_auth_file,
)
from workers.build.proc import ArgvRecorder, LineSink, run

log = structlog.get_logger(__name__)
DRIVER_MARK = "relay-storage-driver"


def default_root() -> Path:
    return Path(tempfile.gettempdir()) / "relay-buildah"


class BuildahBuilder(ToolBuilder):
    name = "buildah"
    tool = "buildah"

    def __init__(
        self,
        settings: BuilderSettings,
        *,
        creds: Credentials | None,
        insecure: bool,
        recorder: ArgvRecorder | None = None,
    ) -> None:
        super().__init__(settings, creds=creds, insecure=insecure, recorder=recorder)
        self.root = settings.buildah_root or default_root()
        self._driver: str | None = settings.storage_driver
        self._driver_lock = asyncio.Lock()

    async def build_and_push(self, job: BuildJob, log_lines: LineSink) -> str:
        self._tool_path()
        base = await self._base_args()
        authfile = job.workdir / "auth.json"
        await asyncio.to_thread(write_auth_file, authfile, self._creds)
        env = self._env(job.workdir, authfile)
        await asyncio.to_thread((job.workdir / "tmp").mkdir, exist_ok=True)
        tls = ["--tls-verify=false"] if self._insecure else []
        await self._step("buildah bud", [*base, *self.bud_args(job, authfile, tls)], env, log_lines)
        digestfile = job.workdir / "digest"
        push = [*base, "push", "--authfile", str(authfile), *tls, "--digestfile", str(digestfile)]
        await self._step(
            "buildah push", [*push, job.ref, f"docker://{job.ref}"], env, log_lines, pushing=True
        )
        digest = read_digest(digestfile, "buildah push")
        await self._run([*base, "rmi", "--force", job.ref], env, log_lines)
        return digest

    def bud_args(self, job: BuildJob, authfile: Path, tls: Sequence[str]) -> list[str]:
        return [
            "bud",
            "--isolation",
            "chroot",
            "--authfile",
            str(authfile),
            *tls,
            *self._platform_and_labels(job),
            "--file",
            str(job.dockerfile),
            "--tag",
            job.ref,
            str(job.context_dir),
        ]

    def _env(self, workdir: Path, authfile: Path) -> dict[str, str]:
        return clean_env(
            {
                "REGISTRY_AUTH_FILE": str(authfile),
                "TMPDIR": str(workdir / "tmp"),
                "BUILDAH_ISOLATION": "chroot",
            }
        )

    async def _base_args(self) -> list[str]:
        driver = await self.storage_driver()
        return [
            str(self._binary),
            "--root",
            str(self.root / "storage"),
            "--runroot",
            str(self.root / "run"),
            "--storage-driver",
            driver,
        ]

    async def storage_driver(self) -> str:
        """The driver for this root: configured, recorded, or detected once and recorded."""
        async with self._driver_lock:
            if self._driver is None:
                self._driver = await self._recorded_or_detected()
                log.info("buildah storage driver chosen", driver=self._driver, root=str(self.root))
            return self._driver

    async def _recorded_or_detected(self) -> str:
        mark = self.root / DRIVER_MARK
        await asyncio.to_thread(self.root.mkdir, mode=0o700, parents=True, exist_ok=True)
        recorded = await asyncio.to_thread(_read, mark)
        if recorded in ("overlay", "vfs"):
            return recorded
        driver = "overlay" if await self._overlay_works() else "vfs"
        await asyncio.to_thread(mark.write_text, driver + "\n")
        return driver

    async def _overlay_works(self) -> bool:
        probe = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="probe-", dir=self.root))
        base = [str(self._binary), "--root", str(probe / "s"), "--runroot", str(probe / "r")]
        base += ["--storage-driver", "overlay"]
        env = clean_env({"TMPDIR": str(probe)})
        try:
            made = await run([*base, "from", "--quiet", "scratch"], env=env, on_line=_ignore)
            name = made.tail[-1] if made.ok and made.tail else ""
            mounted = await run([*base, "mount", name], env=env, on_line=_ignore) if name else made
            if name:
                await run([*base, "rm", "--all"], env=env, on_line=_ignore)
            return mounted.ok
        finally:
            await asyncio.to_thread(shutil.rmtree, probe, ignore_errors=True)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _ignore(line: str) -> None:
    log.debug("storage probe", line=line)
