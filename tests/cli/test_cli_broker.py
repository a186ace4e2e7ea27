"""``relay dlq`` and ``relay tail`` as a person runs them, against a real RabbitMQ vhost."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import pytest

from relay.bus import Bus, DeadLetter, Incoming, Outcome, QueueSpec, connect
from relay.events import new_event
from relay.events.data import GitOther
from relay.settings import BrokerSettings

RELAY = [sys.executable, "-m", "relay.cli.main"]


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[tuple[Bus, dict[str, str]]]:
    tag = uuid.uuid4().hex[:8]
    settings = BrokerSettings(
        url=amqp_url, exchange=f"relay.events.{tag}", queue_prefix=f"relay.{tag}"
    )
    env = {
        **os.environ,
        "RELAY_BROKER__URL": amqp_url,
        "RELAY_BROKER__EXCHANGE": settings.exchange,
        "RELAY_BROKER__QUEUE_PREFIX": settings.queue_prefix,
        "RELAY_LOG_FORMAT": "json",
    }
    bus = connect(settings)
    await bus.start()
    yield bus, env
    await bus.close()


def relay(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RELAY, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def test_dlq_list_then_replay_brings_the_message_back(
    broker: tuple[Bus, dict[str, str]],
) -> None:
    bus, env = broker
    seen: list[Incoming] = []
    verdicts = ["bury", "keep"]

    async def handler(message: Incoming) -> Outcome:
        seen.append(message)
        return DeadLetter("broken on purpose") if verdicts.pop(0) == "bury" else DeadLetter("again")

    queue = QueueSpec(name=f"{env['RELAY_BROKER__QUEUE_PREFIX']}.cli", keys=("git.cli",))
    consumer = await bus.consume(queue, handler)
    event = new_event(
        GitOther(provider="t", receiver="r", event="cli"), source="/t", routing_key="git.cli"
    )
    await bus.publish(event)
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.05)
    listed = await asyncio.to_thread(relay, env, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    assert event.id in listed.stdout and "broken on purpose" in listed.stdout
    dead_id = listed.stdout.split()[0]
    replayed = await asyncio.to_thread(relay, env, "dlq", "replay", dead_id)
    assert replayed.returncode == 0 and f"replayed {dead_id}" in replayed.stdout
    for _ in range(100):
        if len(seen) == 2:
            break
        await asyncio.sleep(0.05)
    assert [m.message_id for m in seen] == [event.id, event.id]
    unknown = await asyncio.to_thread(relay, env, "dlq", "replay", "no-such-id")
    assert unknown.returncode == 1
    await consumer.stop()


async def test_tail_since_replays_history_as_json_lines(broker: tuple[Bus, dict[str, str]]) -> None:
    bus, env = broker
    event = new_event(
        GitOther(provider="t", receiver="r", event="tailed"),
        source="/t",
        routing_key="git.tailed",
        app="hello",
    )
    await bus.publish(event)
    process = await asyncio.create_subprocess_exec(
        *RELAY,
        "tail",
        "--json",
        "--since",
        "5m",
        "--app",
        "hello",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert json.loads(line)["id"] == event.id
    finally:
        process.terminate()
        await process.wait()


def test_tail_refuses_the_memory_bus() -> None:
    env = {**os.environ, "RELAY_BROKER__URL": "memory://"}
    result = relay(env, "tail")
    assert result.returncode != 0 and "needs a RabbitMQ broker" in result.stderr
