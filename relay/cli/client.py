"""A small HTTP client for the gateway's API, shared by ``relay deploy`` and ``relay status``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from relay.signing import sign_headers


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        try:
            parsed = json.loads(body)
            text = f"{parsed.get('error')}: {parsed.get('detail')}"
        except (ValueError, AttributeError):
            text = body[:300]
        super().__init__(f"HTTP {status}: {text}")
        self.status = status


class GatewayClient:
    def __init__(self, base_url: str, *, secret: str | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.secret = secret
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
        )

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    async def signed(
        self, method: str, path: str, payload: dict[str, Any] | None
    ) -> dict[str, Any]:
        body = json.dumps(payload, separators=(",", ":")).encode() if payload is not None else b""
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        if self.secret:
            headers.update(sign_headers(self.secret, body))
        async with self.session.request(
            method, self.base + path, data=body, headers=headers
        ) as response:
            return await _json(response)

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        async with self.session.get(self.base + path, params=params) as response:
            return await _json(response)

    async def events(self, url: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(routing key, CloudEvent) pairs from an SSE stream until the server closes it."""
        async with self.session.get(url, headers={"Accept": "text/event-stream"}) as response:
            if response.status != 200:
                raise ApiError(response.status, await response.text())
            fields: dict[str, str] = {}
            async for raw in response.content:
                line = raw.decode().rstrip("\r\n")
                if line:
                    if not line.startswith(":") and ": " in line:
                        key, value = line.split(": ", 1)
                        fields[key] = value
                    continue
                if "data" in fields:
                    yield fields.get("event", "message"), json.loads(fields["data"])
                fields = {}


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
    text = await response.text()
    if response.status >= 400:
        raise ApiError(response.status, text)
    result: dict[str, Any] = json.loads(text)
    return result
