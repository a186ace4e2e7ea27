"""Delivering one POST with back-off, the way n8n's Wait node and chat webhooks need it.

2xx: delivered. 410: the receiver says stop (done). 409 "finished already" (n8n: the execution
was resumed before): done. 409 "running already" (n8n: the resume came too early), 429, 5xx
and network errors: retried, honouring ``Retry-After``. Other 4xx: permanent. When the short
in-process schedule runs out, ``Transient`` hands the message to the bus's delayed retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp
import structlog

from relay.errors import Permanent, Transient

log = structlog.get_logger(__name__)

SCHEDULE = (0.5, 1.0, 2.0, 4.0)
MAX_RETRY_AFTER = 30.0


@dataclass(frozen=True)
class Delivered:
    status: int
    note: str = "delivered"


Sleep = Callable[[float], Awaitable[None]]


async def post_with_retries(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    request_timeout: float,
    schedule: Sequence[float] = SCHEDULE,
    sleep: Sleep = asyncio.sleep,
    reason: str = "callback_failed",
) -> Delivered:
    last = ""
    for attempt, pause in enumerate([*schedule, None], start=1):
        outcome = await _post_once(session, url, body, headers, request_timeout)
        if isinstance(outcome, Delivered):
            return outcome
        last, wait = outcome
        if pause is None:
            break
        delay = max(pause, wait or 0.0)
        log.info("callback retry", attempt=attempt, wait=round(delay, 2), why=last)
        await sleep(min(delay, MAX_RETRY_AFTER))
    raise Transient(reason, f"no success after {len(schedule) + 1} tries: {last}", stage="notify")


async def _post_once(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    request_timeout: float,
) -> Delivered | tuple[str, float | None]:
    try:
        async with session.post(
            url,
            data=body,
            headers=dict(headers),
            timeout=aiohttp.ClientTimeout(total=request_timeout),
        ) as response:
            text = (await response.text(errors="replace"))[:300]
            return _judge(response.status, text, response.headers.get("Retry-After"))
    except (aiohttp.ClientError, TimeoutError) as exc:
        return (f"{type(exc).__name__}: {exc}", None)


def _judge(status: int, text: str, retry_after: str | None) -> Delivered | tuple[str, float | None]:
    if 200 <= status < 300:
        return Delivered(status)
    if status == 410:
        return Delivered(status, "gone: the receiver no longer waits")
    if status == 409 and "finished" in text.lower():
        return Delivered(status, "already resumed")
    if status in (408, 409, 425, 429) or status >= 500:
        return (f"HTTP {status}: {text.strip()}", parse_retry_after(retry_after))
    raise Permanent("callback_rejected", f"HTTP {status}: {text.strip()}", stage="notify")


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
