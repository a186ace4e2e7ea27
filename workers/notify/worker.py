"""The notify worker: tells n8n's waiting workflow, and configured sinks, how a deploy ended.

Each target is delivered at most once per event (tracked by event id and target), so a retry
caused by one failing sink never repeats a callback that already went through.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import ClassVar

import aiohttp
import structlog

from relay.errors import StageError, Transient
from relay.events import CloudEvent
from relay.metrics import CALLBACK_FAILURES
from relay.settings import Settings, SinkSettings
from relay.signing import sign_headers
from workers.notify.delivery import post_with_retries
from workers.notify.payloads import TERMINAL, Callback, callback_for, render_message, sink_body
from workers.runtime import Context

log = structlog.get_logger(__name__)
JSON = "application/json"


class NotifyWorker:
    name: ClassVar[str] = "notify"
    stage: ClassVar[str] = "notify"
    reports_failures: ClassVar[bool] = False

    def __init__(self, settings: Settings, *, concurrency: int = 32) -> None:
        self.settings = settings
        self.keys = tuple(TERMINAL)
        self.concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def handle(self, event: CloudEvent, ctx: Context) -> None:
        callback = callback_for(event)
        url = event.data.get("callback_url")
        if url:
            await self._once(ctx, "callback", partial(self._callback, url, callback))
        for index, sink in enumerate(self.settings.notify.sinks):
            if event.routing_key in sink.events:
                await self._once(ctx, f"sink{index}", partial(self._sink, sink, event, callback))

    async def _once(self, ctx: Context, target: str, send: Callable[[], Awaitable[None]]) -> None:
        key = f"{ctx.event.id}:{target}"
        if key in ctx.seen:
            return
        try:
            await send()
        except StageError as exc:
            if not isinstance(exc, Transient) or ctx.final_attempt:
                CALLBACK_FAILURES.labels(target).inc()
            raise
        ctx.seen.add(key)

    async def _callback(self, url: str, callback: Callback) -> None:
        body = callback.model_dump_json().encode()
        headers = {"Content-Type": JSON, **self._signature(body)}
        result = await post_with_retries(
            self.session(),
            url,
            body,
            headers,
            request_timeout=self.settings.deploy.callback.timeout,
            schedule=self.settings.deploy.callback.retry_schedule,
        )
        log.info("callback delivered", status=result.status, note=result.note)

    def _signature(self, body: bytes) -> dict[str, str]:
        headers: dict[str, str] = {}
        secrets = self.settings.deploy.secrets
        if secrets:
            headers.update(sign_headers(secrets[0].get_secret_value(), body))
        extra = self.settings.deploy.callback
        if extra.header_name and extra.header_value is not None:
            headers[extra.header_name] = extra.header_value.get_secret_value()
        return headers

    async def _sink(self, sink: SinkSettings, event: CloudEvent, callback: Callback) -> None:
        body = sink_body(sink.type, event, render_message(callback, sink.template))
        headers = {"Content-Type": JSON}
        if sink.type == "webhook":
            headers.update(self._signature(body))
        result = await post_with_retries(
            self.session(),
            sink.url.get_secret_value(),
            body,
            headers,
            request_timeout=10.0,
            schedule=self.settings.deploy.callback.retry_schedule,
            reason="sink_failed",
        )
        log.info("sink notified", sink=sink.type, status=result.status)
