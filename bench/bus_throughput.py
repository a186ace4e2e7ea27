"""Bus throughput on a real RabbitMQ, each case against a bare aio-pika loop in the same run.

Cases, 10,000 persistent events per contender, to fresh quorum queues in a private vhost:
- publish with confirm, one publisher awaiting each confirm in turn;
- publish with confirm, 32 publishes in flight at once;
- consume and ack with one worker (prefetch 32), timed from the first to the last message handled:
  the relay's ``Dispatcher`` (decode, validate, run a no-op handler, ack) on ``RabbitBus.consume``
  vs a bare consumer that only acks, and one that also decodes the body as the relay does.
Contenders take turns in 5 rounds of 2,000 so that the shared machine's changing load falls on
each alike; the ratio relay / bare is what to read, the absolute rates depend on that load.

Run: ``python -m bench.bus_throughput`` (``RELAY_TEST_AMQP_URL`` as in the tests). Prints a table
and appends it, with the machine and the date, under "Bus" in BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection

from bench.summary import Metric, skipped
from relay.bus import QueueSpec
from relay.bus.amqp import QUORUM
from relay.bus.rabbitmq import RabbitBus
from relay.events import CONTENT_TYPE, CloudEvent, decode, encode, new_event
from relay.events.data import GitOther
from relay.logging import configure
from relay.settings import BrokerSettings
from workers.runtime import Context, Dispatcher

N = 10_000
CONCURRENCY = 32
PREFETCH = 32
ROUNDS = 5
KEY = "git.bench"
RESULTS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
Send = Callable[[CloudEvent], Awaitable[None]]


@dataclass(frozen=True)
class Row:
    case: str
    relay: float
    bare: float

    @property
    def ratio(self) -> float:
        return self.relay / self.bare


def events(n: int = N) -> list[CloudEvent]:
    data = GitOther(provider="bench", receiver="bench", event="bench")
    return [new_event(data, source="/bench", routing_key=KEY) for _ in range(n)]


async def in_turn(items: Sequence[CloudEvent], send: Send) -> None:
    for item in items:
        await send(item)


async def in_flight(items: Sequence[CloudEvent], send: Send) -> None:
    """``CONCURRENCY`` lanes, each sending its share in turn: that many publishes in flight."""
    await asyncio.gather(*(in_turn(items[i::CONCURRENCY], send) for i in range(CONCURRENCY)))


class Clock:
    """First-to-last timing of ``count`` handled messages (consumer set-up is not counted)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.seen = 0
        self.first = self.last = 0.0
        self.done = asyncio.Event()

    def tick(self) -> None:
        self.seen += 1
        self.last = time.perf_counter()
        if self.seen == 1:
            self.first = self.last
        if self.seen == self.count:
            self.done.set()

    @property
    def seconds(self) -> float:
        return self.last - self.first


class Bare:
    """The baseline: aio-pika used directly, with the relay's message properties and checks."""

    def __init__(self, connection: AbstractRobustConnection, exchange: str) -> None:
        self.connection = connection
        self.exchange_name = exchange
        self.exchange: AbstractExchange | None = None

    async def start(self) -> None:
        channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        self.exchange = await channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )

    async def publish(self, event: CloudEvent) -> None:
        assert self.exchange is not None
        message = aio_pika.Message(
            encode(event),
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event.id,
        )
        await self.exchange.publish(message, KEY, mandatory=True)

    async def consume(self, name: str, clock: Clock, *, decoding: bool) -> None:
        channel = await self.connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.declare_queue(name, durable=True, arguments=QUORUM)

        async def on_message(message: AbstractIncomingMessage) -> None:
            if decoding:
                decode(message.body, routing_key=message.routing_key, message_id=message.message_id)
            await message.ack()
            clock.tick()

        await queue.consume(on_message)
        await clock.done.wait()
        await channel.close()

    @contextlib.asynccontextmanager
    async def sole_queue(self, name: str) -> AsyncIterator[str]:
        """A fresh quorum queue, the only one bound to KEY while it lives."""
        channel = await self.connection.channel()
        queue = await channel.declare_queue(name, durable=True, arguments=QUORUM)
        await queue.bind(self.exchange_name, routing_key=KEY)
        try:
            yield name
        finally:
            await channel.queue_delete(name)
            await channel.close()


class NoopWorker:
    name: ClassVar[str] = "bench"
    stage: ClassVar[str] = "bench"

    def __init__(self, clock: Clock) -> None:
        self.keys: tuple[str, ...] = (KEY,)
        self.concurrency = PREFETCH
        self.clock = clock

    async def handle(self, event: CloudEvent, ctx: Context) -> None:
        self.clock.tick()


@dataclass
class Bench:
    bus: RabbitBus
    bare: Bare
    prefix: str
    runs: int = 0

    def queue(self) -> str:
        self.runs += 1
        return f"{self.prefix}.q{self.runs}"

    async def publish(
        self, mode: Callable[[Sequence[CloudEvent], Send], Awaitable[None]], who: str, count: int
    ) -> float:
        """Seconds to publish ``count`` events with confirms to a fresh quorum queue."""
        items, send = events(count), (self.bus.publish if who == "relay" else self.bare.publish)
        async with self.bare.sole_queue(self.queue()):
            start = time.perf_counter()
            await mode(items, send)
            return time.perf_counter() - start

    async def consume(self, who: str, count: int) -> float:
        """Seconds from the first to the last of ``count`` queued events handled and acked."""
        clock = Clock(count)
        async with self.bare.sole_queue(self.queue()) as name:
            await in_flight(events(count), self.bare.publish)
            if who == "relay":
                await self.relay_consume(name, clock)
            else:
                await self.bare.consume(name, clock, decoding=who == "bare+decode")
        return clock.seconds

    async def relay_consume(self, name: str, clock: Clock) -> None:
        spec = QueueSpec(name=name, keys=(KEY,), prefetch=PREFETCH)
        worker = NoopWorker(clock)
        consumer = await self.bus.consume(spec, Dispatcher(worker, self.bus, max_attempts=5))
        await clock.done.wait()
        await consumer.stop(grace=5)


async def alternating(
    runs: dict[str, Callable[[int], Awaitable[float]]], n: int = N
) -> dict[str, float]:
    """Messages per second of each contender, taking turns in ROUNDS rounds of n / ROUNDS.

    The machine is shared: taking turns spreads its changing load over every contender.
    """
    seconds = dict.fromkeys(runs, 0.0)
    for round_ in range(ROUNDS):
        names = list(runs)
        for who in names[round_ % len(names) :] + names[: round_ % len(names)]:
            seconds[who] += await runs[who](n // ROUNDS)
    return {who: n / total for who, total in seconds.items()}


async def publish_rows(bench: Bench, n: int = N) -> list[Row]:
    rows = []
    modes = [("1 awaited at a time", in_turn), (f"{CONCURRENCY} in flight", in_flight)]
    for label, mode in modes:
        rates = await alternating(
            {who: functools.partial(bench.publish, mode, who) for who in ("bare", "relay")}, n
        )
        rows.append(Row(f"publish + confirm, {label}", rates["relay"], rates["bare"]))
    return rows


async def consume_rows(bench: Bench, n: int = N) -> list[Row]:
    contenders = ("bare", "bare+decode", "relay")
    rates = await alternating({who: functools.partial(bench.consume, who) for who in contenders}, n)
    label = f"consume + ack, one worker, prefetch {PREFETCH}"
    return [
        Row(f"{label}; bare acks only", rates["relay"], rates["bare"]),
        Row(f"{label}; bare decodes too", rates["relay"], rates["bare+decode"]),
    ]


async def measure(url: str, n: int = N) -> list[Row]:
    tag = uuid.uuid4().hex[:6]
    settings = BrokerSettings(url=url, exchange=f"bench.{tag}", queue_prefix=f"bench.{tag}")
    bus = RabbitBus(settings)
    await bus.start()
    connection = await aio_pika.connect_robust(url)
    bare = Bare(connection, settings.exchange)
    await bare.start()
    bench = Bench(bus, bare, settings.queue_prefix)
    try:
        return [*await publish_rows(bench, n), *await consume_rows(bench, n)]
    finally:
        await bus.close()
        await connection.close()


async def command(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} {argv[1]} exited {proc.returncode}")
    return out.decode().strip()


@contextlib.asynccontextmanager
async def private_vhost() -> AsyncIterator[str]:
    """``RELAY_TEST_AMQP_URL`` pointed at a vhost of our own, deleted afterwards."""
    base = urlsplit(os.environ.get("RELAY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    vhost = f"relay-bench-{uuid.uuid4().hex[:8]}"
    await command("rabbitmqctl", "-q", "add_vhost", vhost)
    try:
        user = base.username or "guest"
        await command("rabbitmqctl", "-q", "set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield urlunsplit(base._replace(path="/" + quote(vhost, safe="")))
    finally:
        await command("rabbitmqctl", "-q", "delete_vhost", vhost)


def table(rows: Sequence[Row]) -> str:
    lines = [
        f"| case ({N:,} events) | relay msg/s | bare aio-pika msg/s | relay / bare |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r.case} | {r.relay:,.0f} | {r.bare:,.0f} | {r.ratio:.2f} |" for r in rows]
    return "\n".join(lines)


async def machine() -> str:
    uname, cpus, date = await asyncio.gather(
        command("uname", "-a"), command("nproc"), command("date", "-u", "+%Y-%m-%dT%H:%M:%SZ")
    )
    broker = await command("rabbitmqctl", "-q", "version")
    versions = f"RabbitMQ {broker}, aio-pika {aio_pika.__version__}"
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (
        f"{date}\n\n- `uname -a`: {uname}\n- `nproc`: {cpus}\n- {versions}\n"
        f"- load average at the start (1, 5, 15 min): {load}"
    )


def record(facts: str, rows: Sequence[Row]) -> None:
    """Put this run under the "Bus" heading of BENCHMARKS.md (created when missing)."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    turns = f"contenders take turns, {ROUNDS} rounds of {N // ROUNDS:,}"
    how = f"`python -m bench.bus_throughput`: {turns}"
    run = f"\n### {facts}\n\n{how}\n\n{table(rows)}\n"
    lines = text.rstrip("\n").split("\n")
    if "## Bus" not in lines:
        lines += ["", "## Bus"]
    start = lines.index("## Bus") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    lines[end:end] = run.rstrip("\n").split("\n") + ([""] if end < len(lines) else [])
    RESULTS.write_text("\n".join(lines) + "\n")


def collect(quick: bool = True) -> list[Metric]:
    """For ``make bench``: each case's relay rate against bare aio-pika (2,000 events if quick)."""
    if shutil.which("rabbitmqctl") is None:
        return [skipped("bus", "rabbitmqctl not installed")]
    n = 2_000 if quick else N

    async def run() -> list[Row]:
        async with private_vhost() as url:
            return await measure(url, n)

    rows = asyncio.run(run())
    return [
        Metric(
            bench="bus",
            name=f"RabbitMQ {row.case} ({n:,} events)",
            value=row.relay,
            unit="msg/s",
            baseline=row.bare,
            baseline_name="bare aio-pika",
        )
        for row in rows
    ]


async def main() -> None:
    configure(level="warning")
    facts = await machine()
    async with private_vhost() as url:
        rows = await measure(url)
    print(table(rows))
    record(facts, rows)
    print(f"\nappended to {RESULTS}")


if __name__ == "__main__":
    asyncio.run(main())
