"""Real RabbitMQ for the gateway's tests and benchmark: a private vhost per run, a reader.

``Vhost`` creates a throw-away vhost with ``rabbitmqctl`` (and deletes it), so leftovers never
change a result; it can also drop the vhost's connections or delete and re-create it to play a
broker that goes away and comes back, without touching the shared server.

``rabbit_bus`` returns the relay's own RabbitMQ bus (``relay.bus.rabbitmq``).

``EventReader`` reads what reached the ``relay.events`` exchange from an exclusive queue.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import urllib.parse
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from relay.bus.rabbitmq import RabbitBus
from relay.settings import BrokerSettings

BASE_URL = os.environ.get("RELAY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def broker_reachable() -> bool:
    """Whether something accepts connections at the broker's address (no event loop needed)."""
    parsed = urllib.parse.urlsplit(BASE_URL)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5672), 2):
            return True
    except OSError:
        return False


class Vhost:
    def __init__(self, prefix: str = "relay-gw-test") -> None:
        self.name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        root = BASE_URL.rstrip("/")
        self.url = f"{root}/{self.name}"

    def create(self) -> Vhost:
        _ctl("add_vhost", self.name)
        _ctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        return self

    def delete(self) -> None:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_vhost", self.name],
            check=False,
            capture_output=True,
            timeout=60,
        )

    def close_connections(self) -> None:
        _ctl("close_all_connections", "--vhost", self.name, "relay gateway test")


def rabbit_bus(url: str, **settings: Any) -> RabbitBus:
    """The relay's RabbitMQ bus, unstarted; without the history stream unless asked, so that an
    event no queue is bound to is really unroutable."""
    return RabbitBus(BrokerSettings(url=url, **{"history": False, **settings}))


class EventReader:
    """An exclusive queue bound to ``exchange`` with ``keys``; returns decoded envelopes."""

    def __init__(
        self, url: str, keys: tuple[str, ...] = ("#",), *, exchange: str = "relay.events"
    ) -> None:
        self._url, self._keys, self._exchange = url, keys, exchange
        self._connection: Any = None
        self._queue: Any = None

    async def __aenter__(self) -> EventReader:
        self._connection = await aio_pika.connect(self._url, timeout=5)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(
            self._exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in self._keys:
            await self._queue.bind(exchange, key)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._connection.close()

    async def get(self, timeout: float = 5.0) -> tuple[dict[str, Any], AbstractIncomingMessage]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            message = await self._queue.get(fail=False, no_ack=True)
            if message is not None:
                return json.loads(message.body), message
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("no event arrived")
            await asyncio.sleep(0.02)

    async def empty(self, settle: float = 0.3) -> bool:
        """True when nothing arrives within ``settle`` seconds."""
        await asyncio.sleep(settle)
        return await self._queue.get(fail=False, no_ack=True) is None
