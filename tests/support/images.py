"""Images for tests, made offline: a busybox base built with buildah, tiny scratch images and a
multi-arch OCI index pushed with raw registry API calls.

    ref = make_busybox_base(registry)          # "127.0.0.1:PORT/relay-test/busybox:latest"
    img = push_scratch_image(registry, "apps/web", "v1", b"hello")    # PushedImage
    idx = push_multiarch_index(registry, "apps/multi", "v1")          # PushedIndex

Every buildah call goes through :class:`Buildah`: ``--storage-driver vfs`` always, and a storage
root/runroot (plus TMPDIR, auth file and storage.conf) of its own in a temp dir, so test runs
never share image state with each other or with the machine.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tests.support._procs import ServiceError, clean_env, require_binary
from tests.support.registry import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Registry,
    sha256_digest,
)

BUSYBOX = "/bin/busybox"  # Debian busybox-static: statically linked, runs in an empty rootfs
BASE_REPO = "relay-test/busybox"
STORAGE_DRIVER = "vfs"

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


class Buildah:
    """buildah with private storage under ``base_dir`` (vfs, own root/runroot/TMPDIR/auth)."""

    def __init__(self, base_dir: str | Path | None = None) -> None:
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="relay-buildah-"))
        self.root = self.base_dir / "root"
        self.runroot = self.base_dir / "runroot"
        self.tmpdir = self.base_dir / "tmp"
        for d in (self.root, self.runroot, self.tmpdir):
            d.mkdir(parents=True, exist_ok=True)
        self.storage_conf = self.base_dir / "storage.conf"
        self.storage_conf.write_text(
            "[storage]\n"
            f'driver = "{STORAGE_DRIVER}"\n'
            f'graphroot = "{self.root}"\n'
            f'runroot = "{self.runroot}"\n'
        )
        self.auth_file = self.base_dir / "auth.json"  # must exist, or every call fails
        self.auth_file.write_text('{"auths": {}}\n')
        self.binary = require_binary("buildah")

    @property
    def global_args(self) -> list[str]:
        """Flags every buildah call here starts with (also for the relay's own buildah calls)."""
        return [
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            STORAGE_DRIVER,
        ]

    @property
    def env(self) -> dict[str, str]:
        return clean_env(
            {
                "TMPDIR": str(self.tmpdir),
                "CONTAINERS_STORAGE_CONF": str(self.storage_conf),
                "REGISTRY_AUTH_FILE": str(self.auth_file),
                "BUILDAH_ISOLATION": "chroot",
                "STORAGE_DRIVER": STORAGE_DRIVER,
            },
            drop_prefixes=("BUILDAH_", "CONTAINERS_", "REGISTRY_AUTH", "STORAGE_"),
        )

    def run(
        self, *args: str, check: bool = True, timeout: float = 300, cwd: str | Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [self.binary, *self.global_args, *args],
            env=self.env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and res.returncode != 0:
            raise ServiceError(
                f"buildah {' '.join(args[:2])} failed ({res.returncode}):\n"
                f"{res.stderr.strip()[-3000:]}"
            )
        return res

    def bud(
        self,
        context: str | Path,
        tag: str,
        *,
        registry: Registry | None = None,
        dockerfile: str | Path | None = None,
        extra: Sequence[str] = (),
    ) -> str:
        """``buildah bud --isolation chroot``; pulls from ``registry`` with its creds. Image id."""
        args = ["bud", "--isolation", "chroot", "--layers=false", "-t", tag]
        if registry is not None:
            args += ["--tls-verify=false", "--creds", registry.creds]
        if dockerfile is not None:
            args += ["-f", str(dockerfile)]
        args += [*extra, str(context)]
        self.run(*args)
        return self.run("images", "-q", "--no-trunc", tag).stdout.strip().splitlines()[0]

    def push(self, image: str, registry: Registry, dest: str | None = None) -> str:
        """Push to ``registry`` (``--tls-verify=false --creds``); returns the manifest digest."""
        digest_file = self.tmpdir / f"digest-{time.monotonic_ns()}"
        args = [
            "push",
            "--tls-verify=false",
            "--creds",
            registry.creds,
            "--digestfile",
            str(digest_file),
            image,
        ]
        if dest is not None:
            args.append(dest if "://" in dest else f"docker://{dest}")
        self.run(*args)
        digest = digest_file.read_text().strip()
        digest_file.unlink()
        return digest

    def close(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Buildah:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _busybox_rootfs(target: Path) -> None:
    """A root filesystem: static busybox, a symlink per applet, /etc/passwd, /tmp, /root."""
    busybox = Path(BUSYBOX)
    if not busybox.is_file():
        raise ServiceError(f"{BUSYBOX} missing: install busybox-static (scripts/setup-system.sh)")
    applets = subprocess.run(
        [BUSYBOX, "--list-full"], check=True, capture_output=True, text=True
    ).stdout.split()
    (target / "bin").mkdir(parents=True)
    shutil.copy2(busybox, target / "bin" / "busybox")
    for rel in applets:  # e.g. bin/sh, usr/bin/env, sbin/ip
        link = target / rel
        if rel == "bin/busybox" or link.exists():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")
    (target / "etc").mkdir(exist_ok=True)
    (target / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
    )
    (target / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (target / "root").mkdir(mode=0o700)
    (target / "tmp").mkdir()
    (target / "tmp").chmod(0o1777)


def make_busybox_base(
    registry: Registry,
    *,
    repo: str = BASE_REPO,
    tag: str = "latest",
    buildah: Buildah | None = None,
) -> str:
    """Build a tiny busybox image from scratch with buildah and push it; returns its reference.

    A Dockerfile ``FROM <ref>`` with ``RUN`` steps builds under ``buildah bud --isolation
    chroot`` (pass ``--tls-verify=false --creds`` for the pull, as :meth:`Buildah.bud` does).
    """
    own = buildah is None
    b = buildah or Buildah()
    try:
        ref = f"{registry.host}/{repo}:{tag}"
        rootfs = b.tmpdir / "busybox-rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        rootfs.mkdir()
        _busybox_rootfs(rootfs)
        ctr = b.run(
            "from", "--name", f"busybox-base-{os.getpid()}-{time.monotonic_ns()}", "scratch"
        ).stdout.strip()
        try:
            b.run("copy", ctr, f"{rootfs}/", "/")
            b.run(
                "config",
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--cmd",
                "/bin/sh",
                "--workingdir",
                "/",
                "--os",
                "linux",
                "--arch",
                "amd64",
                "--label",
                "org.opencontainers.image.title=relay-test-busybox",
                ctr,
            )
            b.run("commit", "--quiet", ctr, ref)
        finally:
            b.run("rm", ctr, check=False)
        b.push(ref, registry)
        shutil.rmtree(rootfs, ignore_errors=True)
        return ref
    finally:
        if own:
            b.close()


# --- raw registry API images ----------------------------------------------------------------


@dataclass(frozen=True)
class PushedImage:
    registry_host: str
    repo: str
    tag: str
    digest: str  # manifest digest
    media_type: str
    config_digest: str
    layer_digests: tuple[str, ...]

    @property
    def ref(self) -> str:
        """``127.0.0.1:PORT/repo:tag``"""
        return f"{self.registry_host}/{self.repo}:{self.tag}"

    @property
    def pinned(self) -> str:
        """``127.0.0.1:PORT/repo@sha256:…``"""
        return f"{self.registry_host}/{self.repo}@{self.digest}"


@dataclass(frozen=True)
class PushedIndex:
    registry_host: str
    repo: str
    tag: str
    digest: str  # index digest: what a tag resolves to
    media_type: str
    platforms: Mapping[str, str] = field(default_factory=dict)  # "linux/amd64" -> manifest digest

    @property
    def ref(self) -> str:
        return f"{self.registry_host}/{self.repo}:{self.tag}"

    @property
    def pinned(self) -> str:
        return f"{self.registry_host}/{self.repo}@{self.digest}"


def layer_tar(files: Mapping[str, bytes]) -> bytes:
    """An uncompressed, reproducible tar of regular files (mtime 0, root-owned, mode 0644)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _image_parts(
    files: Mapping[str, bytes], *, arch: str, os_name: str, oci: bool, variant: str | None = None
) -> tuple[bytes, bytes, bytes]:
    """(config json, gzip layer, manifest json) for a one-layer image."""
    tar = layer_tar(files)
    layer = gzip.compress(tar, mtime=0)
    config_doc: dict[str, object] = {
        "architecture": arch,
        "os": os_name,
        "created": "1970-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(tar)]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "relay tests"}],
    }
    if variant:
        config_doc["variant"] = variant
    config = json.dumps(config_doc, sort_keys=True, separators=(",", ":")).encode()
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG if oci else DOCKER_CONFIG,
            "digest": sha256_digest(config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": OCI_LAYER_GZIP if oci else DOCKER_LAYER_GZIP,
                "digest": sha256_digest(layer),
                "size": len(layer),
            }
        ],
    }
    manifest = json.dumps(manifest_doc, sort_keys=True, separators=(",", ":")).encode()
    return config, layer, manifest


def push_scratch_image(
    registry: Registry,
    repo: str,
    tag: str,
    content: bytes,
    *,
    path: str = "content",
    media: str = "oci",
    arch: str = "amd64",
) -> PushedImage:
    """Push a one-layer FROM-scratch image holding ``content`` at ``/path`` under ``repo:tag``.

    Raw API calls (no buildah): ~10 ms. ``media`` is ``"oci"`` or ``"docker"`` (schema 2).
    """
    oci = _oci_flag(media)
    config, layer, manifest = _image_parts({path: content}, arch=arch, os_name="linux", oci=oci)
    config_digest = registry.push_blob(repo, config)
    layer_digest = registry.push_blob(repo, layer)
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    digest = registry.put_manifest(repo, tag, manifest, media_type)
    return PushedImage(registry.host, repo, tag, digest, media_type, config_digest, (layer_digest,))


def push_multiarch_index(
    registry: Registry,
    repo: str,
    tag: str,
    *,
    platforms: Iterable[str] = ("linux/amd64", "linux/arm64"),
    media: str = "oci",
    content: bytes = b"",
) -> PushedIndex:
    """Push one small image per platform (by digest) and an index/manifest list as ``tag``.

    Each platform's layer holds ``/platform`` = its name (+ ``content``), so digests differ.
    ``media="oci"`` gives an OCI image index, ``"docker"`` a Docker manifest list.
    """
    oci = _oci_flag(media)
    entries = []
    per_platform: dict[str, str] = {}
    for plat in platforms:
        os_name, arch, *rest = plat.split("/")
        variant = rest[0] if rest else None
        config, layer, manifest = _image_parts(
            {"platform": plat.encode() + b"\n" + content},
            arch=arch,
            os_name=os_name,
            oci=oci,
            variant=variant,
        )
        registry.push_blob(repo, config)
        registry.push_blob(repo, layer)
        mt = OCI_MANIFEST if oci else DOCKER_MANIFEST
        digest = registry.put_manifest(repo, sha256_digest(manifest), manifest, mt)
        per_platform[plat] = digest
        platform_doc: dict[str, str] = {"architecture": arch, "os": os_name}
        if variant:
            platform_doc["variant"] = variant
        entries.append(
            {"mediaType": mt, "digest": digest, "size": len(manifest), "platform": platform_doc}
        )
    index_type = OCI_INDEX if oci else DOCKER_MANIFEST_LIST
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": index_type, "manifests": entries},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    digest = registry.put_manifest(repo, tag, index, index_type)
    return PushedIndex(registry.host, repo, tag, digest, index_type, per_platform)


def _oci_flag(media: str) -> bool:
    if media not in ("oci", "docker"):
        raise ValueError(f"media must be 'oci' or 'docker', not {media!r}")
    return media == "oci"
