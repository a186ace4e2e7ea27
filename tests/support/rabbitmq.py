"""A real RabbitMQ for tests: a private vhost per run, and a way to drop every connection.

``rabbitmqctl`` talks to the local node (tests run on the broker's machine, loopback only).
Sync helpers are for session fixtures (outside any event loop); the async one for test bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote, urlsplit, urlunsplit

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
CTL_TIMEOUT = 60.0


def base_url() -> str:
    return os.environ.get("RELAY_TEST_AMQP_URL", DEFAULT_URL)


def url_for(vhost: str) -> str:
    """``RELAY_TEST_AMQP_URL`` with its vhost replaced."""
    parts = urlsplit(base_url())
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


def user() -> str:
    return urlsplit(base_url()).username or "guest"


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, timeout=CTL_TIMEOUT)


def create_vhost(prefix: str = "relay-test") -> str:
    """A fresh vhost the test user may use fully; returns its name."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:12]}"
    _ctl("add_vhost", vhost)
    _ctl("set_permissions", "-p", vhost, user(), ".*", ".*", ".*")
    return vhost


def delete_vhost(vhost: str) -> None:
    _ctl("delete_vhost", vhost)


async def _actl(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=asyncio.subprocess.DEVNULL
    )
    code = await asyncio.wait_for(proc.wait(), CTL_TIMEOUT)
    if code != 0:
        raise RuntimeError(f"rabbitmqctl {args[0]} exited {code}")


async def close_all_connections(vhost: str, reason: str = "test") -> None:
    """Make the broker drop every client connection of ``vhost`` (others' runs are left alone)."""
    await _actl("close_all_connections", "--vhost", vhost, "--limit", "1000", reason)


@contextlib.asynccontextmanager
async def outage(vhost: str) -> AsyncIterator[None]:
    """The broker drops every connection of ``vhost`` and refuses new ones until the block ends.

    Clients reconnect within milliseconds after ``close_all_connections`` alone; revoking the
    vhost permissions first keeps them out long enough to see what they do meanwhile.
    """
    await _actl("clear_permissions", "-p", vhost, user())
    try:
        await close_all_connections(vhost)
        yield
    finally:
        await _actl("set_permissions", "-p", vhost, user(), ".*", ".*", ".*")


async def delete_queue(vhost: str, queue: str) -> None:
    """Delete a queue behind the clients' backs (to make one of their publishes fail)."""
    await _actl("delete_queue", "-p", vhost, queue)
