"""Build contexts: inline files written safely, or a shallow Git checkout, and their digest.

The files of a deploy request are untrusted: a name like ``../x`` or ``/etc/x``, or a name that
meets a symlink, must never write outside the fresh context directory. Names are checked first
(relative, no ``..``), the sizes next (before anything is written), and then every file is
created relative to an open directory descriptor (``openat``) with ``O_NOFOLLOW | O_EXCL``, each
parent directory opened with ``O_NOFOLLOW | O_DIRECTORY``: no path is ever resolved through a
link, so a link planted in the context cannot redirect a write.

The source digest (sha256 over the sorted file names and contents, the Dockerfile and the
target platform) is recorded as the image label ``dev.relay.source-digest``; a redelivered
deploy whose image already carries it is not rebuilt.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from relay.errors import Permanent
from relay.events.deploy import Source, check_context_path

SOURCE_LABEL = "dev.relay.source-digest"
DOCKERFILE = "Dockerfile"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True, kw_only=True)
class Limits:
    max_context_bytes: int
    max_file_bytes: int


@dataclass(frozen=True, kw_only=True)
class BuildContext:
    """A directory to build, the Dockerfile to build it with, and what it digests to."""

    context_dir: Path
    dockerfile: Path
    source_digest: str


def check_inline(files: Mapping[str, str], dockerfile: str | None, limits: Limits) -> None:
    """Refuse bad names and oversized contexts before anything is written."""
    total = len((dockerfile or "").encode())
    for name, text in files.items():
        try:
            check_context_path(name)
        except ValueError as exc:
            raise Permanent("invalid_source", str(exc)) from None
        size = len(text.encode())
        if size > limits.max_file_bytes:
            raise Permanent(
                "context_too_large",
                f"file {name!r} has {size} bytes; the limit is {limits.max_file_bytes} per file",
            )
        total += size
    if total > limits.max_context_bytes:
        raise Permanent(
            "context_too_large",
            f"the context has {total} bytes; the limit is {limits.max_context_bytes}",
        )


def write_files(root: Path, files: Mapping[str, bytes]) -> None:
    """Create each file under ``root`` without following any link (blocking: use a thread)."""
    for name in files:  # every name first: a bad one means nothing is written at all
        try:
            check_context_path(name)
        except ValueError as exc:
            raise Permanent("invalid_source", str(exc)) from None
    root_fd = os.open(root, _DIR_FLAGS)
    try:
        for name in sorted(files):
            _write_one(root_fd, name.split("/"), files[name], name)
    finally:
        os.close(root_fd)


def _write_one(root_fd: int, parts: list[str], data: bytes, name: str) -> None:
    fds: list[int] = []
    try:
        parent = root_fd
        for part in parts[:-1]:
            parent = _open_dir(parent, part, name)
            fds.append(parent)
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, 0o644, dir_fd=parent)
        except OSError as exc:
            raise Permanent("invalid_source", f"cannot create {name!r}: {_reason(exc)}") from None
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    finally:
        for fd in fds:
            os.close(fd)


def _open_dir(parent: int, part: str, name: str) -> int:
    """Open (creating if needed) one directory level below ``parent``, refusing links."""
    try:
        os.mkdir(part, 0o755, dir_fd=parent)
    except FileExistsError:
        pass
    except OSError as exc:
        raise Permanent("invalid_source", f"cannot create {name!r}: {_reason(exc)}") from None
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        raise Permanent("invalid_source", f"cannot create {name!r}: {_reason(exc)}") from None


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return "a path component is a link or not a directory"
    if exc.errno == errno.EEXIST:
        return "it already exists"
    return exc.strerror or str(exc)


async def inline_context(
    source: Source, workdir: Path, limits: Limits, platform: str | None
) -> BuildContext:
    """Write ``source.files`` into ``workdir/context``; the Dockerfile beside it, not inside."""
    files = dict(source.files or {})
    check_inline(files, source.dockerfile, limits)
    context_dir = workdir / "context"
    await asyncio.to_thread(context_dir.mkdir, mode=0o755)
    encoded = {name: text.encode() for name, text in files.items()}
    await asyncio.to_thread(write_files, context_dir, encoded)
    if source.dockerfile is not None:
        dockerfile = workdir / "relay.Dockerfile"
        dockerfile_bytes = source.dockerfile.encode()
        await asyncio.to_thread(dockerfile.write_bytes, dockerfile_bytes)
    else:
        dockerfile = context_dir / DOCKERFILE
        dockerfile_bytes = encoded[DOCKERFILE]
    digest = source_digest(sorted(encoded.items()), dockerfile_bytes, platform)
    return BuildContext(context_dir=context_dir, dockerfile=dockerfile, source_digest=digest)


def source_digest(
    entries: Iterable[tuple[str, bytes]], dockerfile: bytes, platform: str | None
) -> str:
    """sha256 over (name, content) pairs in name order, the Dockerfile and the platform."""
    h = hashlib.sha256(b"relay-source-v1\0")
    for name, data in sorted(entries):
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    h.update(f"{DOCKERFILE}\0{len(dockerfile)}\0".encode())
    h.update(dockerfile)
    h.update(f"platform\0{platform or ''}".encode())
    return "sha256:" + h.hexdigest()


def tree_entries(root: Path, max_bytes: int) -> list[tuple[str, bytes]]:
    """(relative name, content) of a checked-out tree; links inside it only (blocking)."""
    entries: list[tuple[str, bytes]] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if Path(dirpath, d).is_symlink()]:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            data = _entry_bytes(root, path, rel)
            total += len(data)
            if total > max_bytes:
                raise Permanent(
                    "context_too_large", f"the checkout is larger than {max_bytes} bytes"
                )
            entries.append((rel, data))
    return entries


def _entry_bytes(root: Path, path: Path, rel: str) -> bytes:
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        target = os.readlink(path)
        resolved = (path.parent / target).resolve()
        if os.path.isabs(target) or not resolved.is_relative_to(root.resolve()):
            raise Permanent("invalid_source", f"{rel!r} is a link pointing outside the context")
        return b"link\0" + target.encode()
    if not stat.S_ISREG(mode):
        raise Permanent("invalid_source", f"{rel!r} is not a regular file")
    return path.read_bytes()
