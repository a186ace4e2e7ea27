"""Registry retention: keep an app's newest versions, delete the older manifests by digest.

Order: by the ``created`` time in each tag's image config (set by the builder when it built the
image), newest first, ties broken by tag name. The registry API does not expose when a tag was
pushed, so push order cannot be observed; ``created`` is what is recorded. The newest
``keep_versions`` tags keep their digests, and so does every digest in ``protect`` (the image a
deploy just pinned), every image younger than ``retention_min_age`` and every image whose age
cannot be read. A digest shared by a kept tag is never deleted (deleting a manifest removes
every tag pointing to it). Deleting manifests frees no disk space by itself: blobs are reclaimed
by the registry's ``garbage-collect`` (see docs/build-worker.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from workers.build.refs import ImageRef
from workers.build.registry import Registry

log = structlog.get_logger(__name__)
_LOOKUPS_AT_ONCE = 4


@dataclass(frozen=True)
class TagInfo:
    tag: str
    digest: str
    created: datetime | None


async def inventory(registry: Registry, host: str, repo: str) -> list[TagInfo]:
    """Every tag of ``repo`` with its digest and created time, newest first."""
    slots = asyncio.Semaphore(_LOOKUPS_AT_ONCE)

    async def one(tag: str) -> TagInfo | None:
        async with slots:
            ref = ImageRef(host=host, repo=repo, tag=tag)
            digest = await registry.manifest_digest(ref)
            if digest is None:
                return None
            config = await registry.image_config(ref)
            return TagInfo(tag, digest, _created(config))

    found = await asyncio.gather(*(one(t) for t in await registry.tags(host, repo)))
    return sorted((t for t in found if t), key=_newest_first)


def _newest_first(info: TagInfo) -> tuple[int, float, str]:
    """Dated tags newest first, then the undated ones (kept, but not counted as versions)."""
    if info.created is None:
        return (1, 0.0, info.tag)
    return (0, -info.created.timestamp(), info.tag)


def doomed(
    tags: list[TagInfo],
    *,
    keep: int,
    protect: Collection[str] = (),
    min_age: float = 0.0,
    now: datetime | None = None,
) -> list[str]:
    """Digests to delete from an inventory (newest first), in order, without repeats."""
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=min_age)
    kept = {t.digest for t in tags[:keep]} | set(protect)
    kept |= {t.digest for t in tags if t.created is None or t.created > cutoff}
    return list(dict.fromkeys(t.digest for t in tags[keep:] if t.digest not in kept))


async def apply_retention(
    registry: Registry,
    host: str,
    repo: str,
    *,
    keep: int,
    protect: Collection[str],
    min_age: float,
) -> list[str]:
    """Delete the manifests beyond the newest ``keep``; returns the digests deleted."""
    tags = await inventory(registry, host, repo)
    deleted = []
    for digest in doomed(tags, keep=keep, protect=protect, min_age=min_age):
        if await registry.delete_manifest(host, repo, digest):
            deleted.append(digest)
    if deleted:
        log.info("retention deleted old images", repo=repo, kept=keep, deleted=deleted)
    return deleted


async def delete_all(registry: Registry, host: str, repo: str) -> list[str]:
    """Delete every manifest a tag of ``repo`` points to (an app was removed)."""
    tags = await inventory(registry, host, repo)
    deleted = []
    for digest in dict.fromkeys(t.digest for t in tags):
        if await registry.delete_manifest(host, repo, digest):
            deleted.append(digest)
    log.info("app images deleted", repo=repo, deleted=deleted)
    return deleted


def _created(config: dict[str, object] | None) -> datetime | None:
    raw = (config or {}).get("created")
    if not isinstance(raw, str):
        return None
    try:
        parsed = datetime.fromisoformat(_trim_nanos(raw.replace("Z", "+00:00")))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _trim_nanos(text: str) -> str:
    """Go writes nanoseconds (``.123456789``); Python parses at most microseconds."""
    head, dot, rest = text.partition(".")
    if not dot:
        return text
    digits = len(rest) - len(rest.lstrip("0123456789"))
    return f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
