"""The same bus tests on ``memory://`` and on a real RabbitMQ (a private vhost per run)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest

from relay.bus import Bus, QueueSpec, connect
from relay.settings import BrokerSettings, RetrySettings
from tests.support import rabbitmq

DELAYS = (0.05, 0.2, 0.6)
MAX_ATTEMPTS = 4


@pytest.fixture(scope="session")
def rabbit_vhost() -> Iterator[str]:
    vhost = rabbitmq.create_vhost()
    yield vhost
    rabbitmq.delete_vhost(vhost)


@dataclass
class BusEnv:
    """One test's bus world: its own exchange and queue prefix, so tests never share a queue."""

    kind: str
    url: str
    vhost: str | None
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    buses: list[Bus] = field(default_factory=list)

    def settings(
        self,
        *,
        delays: tuple[float, ...] = DELAYS,
        max_attempts: int = MAX_ATTEMPTS,
        history: bool = False,
    ) -> BrokerSettings:
        return BrokerSettings(
            url=self.url,
            exchange=f"relay.events.{self.tag}",
            queue_prefix=f"relay.{self.tag}",
            confirm_timeout=5.0,
            reconnect_interval=0.5,
            history=history,
            retry=RetrySettings(delays=list(delays), max_attempts=max_attempts),
        )

    async def bus(
        self,
        *,
        delays: tuple[float, ...] = DELAYS,
        max_attempts: int = MAX_ATTEMPTS,
        history: bool = False,
    ) -> Bus:
        """A started bus (on memory://, one per test: a second call returns the first)."""
        if self.kind == "memory" and self.buses:
            return self.buses[0]
        bus = connect(self.settings(delays=delays, max_attempts=max_attempts, history=history))
        await bus.start()
        self.buses.append(bus)
        return bus

    def queue(self, name: str, *keys: str, prefetch: int = 1) -> QueueSpec:
        return QueueSpec(name=f"relay.{self.tag}.{name}", keys=keys, prefetch=prefetch)

    async def close(self) -> None:
        for bus in self.buses:
            await bus.close()


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def bus_url(request: pytest.FixtureRequest) -> tuple[str, str, str | None]:
    if request.param == "memory":
        return "memory", "memory://", None
    vhost: str = request.getfixturevalue("rabbit_vhost")
    return "rabbitmq", rabbitmq.url_for(vhost), vhost


@pytest.fixture
async def env(bus_url: tuple[str, str, str | None]) -> AsyncIterator[BusEnv]:
    kind, url, vhost = bus_url
    world = BusEnv(kind=kind, url=url, vhost=vhost)
    yield world
    await world.close()


@pytest.fixture
def rabbit_url(rabbit_vhost: str) -> str:
    return rabbitmq.url_for(rabbit_vhost)


@pytest.fixture
async def rabbit_env(rabbit_vhost: str) -> AsyncIterator[BusEnv]:
    world = BusEnv(kind="rabbitmq", url=rabbitmq.url_for(rabbit_vhost), vhost=rabbit_vhost)
    yield world
    await world.close()
