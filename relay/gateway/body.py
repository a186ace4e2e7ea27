"""Reading request bodies safely: content type first, then a capped, timed, streamed read.

An oversized body is refused from its ``Content-Length`` before a byte is read, or as soon as the
bytes counted while reading pass the cap, so it is never buffered whole; a client that sends its
body too slowly is cut off after the read timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from aiohttp import web

from relay.gateway.errors import RequestTimeout, TooLarge, UnsupportedMediaType


def require_media_type(request: web.Request, allowed: Collection[str]) -> str:
    media = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if media not in allowed:
        names = ", ".join(sorted(allowed))
        shown = media or "none"
        raise UnsupportedMediaType(f"content type {shown!r} is not accepted here; send {names}")
    return media


async def read_body(request: web.Request, *, limit: int, within: float) -> bytes:
    """The whole body, at most ``limit`` bytes, within ``within`` seconds."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise TooLarge(f"the body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(within):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"the body is larger than the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"the body was not received within {within:g} s") from None
    return b"".join(chunks)
