"""Image references, parsed once so that every registry call agrees on host, repository and tag.

Docker's rules: the first component is a registry host when it holds a ``.`` or a ``:`` or is
``localhost``; otherwise the image lives on Docker Hub (``docker.io``, API at
``registry-1.docker.io``, one-component names under ``library/``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from relay.errors import Permanent

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REPO = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")


@dataclass(frozen=True, kw_only=True)
class ImageRef:
    """``host/repo[:tag][@digest]``; ``host`` is what users write (``docker.io`` for the Hub)."""

    host: str
    repo: str
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.host == DOCKER_HUB else self.host

    @property
    def reference(self) -> str:
        """What the manifest endpoint is asked for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repo}"

    def pinned(self, digest: str) -> str:
        """``host/repo:tag@sha256:…`` (the tag kept for people, the digest for Kubernetes)."""
        tag = f":{self.tag}" if self.tag else ""
        return f"{self.name}{tag}@{digest}"

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        at = f"@{self.digest}" if self.digest else ""
        return f"{self.name}{tag}{at}"


def parse_image(text: str) -> ImageRef:
    """Parse a reference; raises ``Permanent("invalid_image")`` with the reason."""
    rest, _, digest = text.partition("@")
    if digest and not _DIGEST.match(digest):
        raise Permanent("invalid_image", f"{text!r}: the digest must be sha256:<64 hex>")
    host, path = _split_host(rest)
    repo, tag = _split_tag(path)
    if not _REPO.match(repo):
        raise Permanent("invalid_image", f"{text!r}: {repo!r} is not a repository name")
    if tag is not None and not _TAG.match(tag):
        raise Permanent("invalid_image", f"{text!r}: {tag!r} is not a tag")
    if host == DOCKER_HUB and "/" not in repo:
        repo = f"library/{repo}"
    if tag is None and not digest:
        tag = "latest"
    return ImageRef(host=host, repo=repo, tag=tag, digest=digest or None)


def _split_host(text: str) -> tuple[str, str]:
    first, sep, rest = text.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return DOCKER_HUB, text


def _split_tag(path: str) -> tuple[str, str | None]:
    repo, sep, tag = path.rpartition(":")
    if sep and "/" not in tag:
        return repo, tag
    return path, None


def app_image(registry: str, app: str, version: str) -> ImageRef:
    """Where a built app goes: ``<registry>/<app>:<version>``."""
    return parse_image(f"{registry.rstrip('/')}/{app}:{version}")
