"""RabbitMQ: publishes spread over several confirm channels keep every publish's own verdict.

The bus takes turns over ``broker.publisher_channels`` channels and publishes through aiormq
without waiting for the socket flush. Concurrent publishes, some routable and some not, must
each get their own answer (a confirm, or ``Unroutable`` from the broker's return), and exactly
the confirmed ones must be in the queue, persistent, with the CloudEvents content type and the
event's id as ``message_id``.
"""

from __future__ import annotations

import asyncio

import pytest

from relay.bus.rabbitmq import RabbitBus
from relay.errors import Unroutable
from relay.events import CONTENT_TYPE
from tests.bus.conftest import BusEnv
from tests.bus.helpers import event
from tests.support.gateway_amqp import EventReader

pytestmark = pytest.mark.rabbitmq
PERSISTENT = 2


@pytest.mark.parametrize("channels", [1, 4])
async def test_concurrent_publishes_each_get_their_own_confirm_or_return(
    rabbit_env: BusEnv, channels: int
) -> None:
    exchange = f"relay.events.pool{channels}"
    settings = rabbit_env.settings().model_copy(
        update={"publisher_channels": channels, "exchange": exchange}
    )
    bus = RabbitBus(settings)
    await bus.start()
    rabbit_env.buses.append(bus)
    events = [event("git.routed" if n % 3 else "git.nobody", n) for n in range(60)]
    routed = {e.id for e in events if e.routing_key == "git.routed"}

    async with EventReader(rabbit_env.url, ("git.routed",), exchange=exchange) as reader:
        results = await asyncio.gather(*(bus.publish(e) for e in events), return_exceptions=True)
        received = [await reader.get() for _ in routed]
        assert await reader.empty()

    for sent, result in zip(events, results, strict=True):
        if sent.routing_key == "git.nobody":
            assert isinstance(result, Unroutable), (sent.id, result)
        else:
            assert result is None, (sent.id, result)
    assert {message.message_id for _, message in received} == routed
    assert {body["id"] for body, _ in received} == routed
    assert {message.delivery_mode for _, message in received} == {PERSISTENT}
    assert {message.content_type for _, message in received} == {CONTENT_TYPE}
