"""Scenario 2: the broker restarted under a gateway load; no 202 without its event delivered.

A private, throw-away RabbitMQ node of this run (never the shared server) carries a ``relay
gateway`` process. Before the load, a durable quorum queue bound to ``relay.events`` with ``#``
is declared. Clients then post signed deploys and GitHub/GitLab pushes and record every answer
and every event id a 202 gave; mid-load the node is shut down (``rabbitmqctl -n NODE shutdown``)
and started again. Afterwards the queue and the history stream are read to the end: every 202's
event id must be in both (the gateway answers 202 only after the broker's confirm). 503s are
expected while the node is away, each with Retry-After; the gateway must recover by itself.

Run: ``python -m chaos.broker_restart``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from chaos.broker import PrivateNode, epmd_names, stop_epmd_if_idle
from chaos.load import Sender
from chaos.procs import adopting_orphans
from chaos.report import Result, run_alone, say
from chaos.stack import Stack, StackConfig
from relay.bus import Ack, Incoming, Outcome, QueueSpec
from relay.bus.rabbitmq import RabbitBus
from relay.errors import BrokerUnavailable
from relay.settings import BrokerSettings

TAP = QueueSpec(name="chaos.tap", keys=("#",), prefetch=500)


@dataclass
class Options:
    clients: int = 8
    pause: float = 0.02  # seconds each client waits between requests
    before: float = 4.0  # seconds of load before the shutdown
    after: float = 5.0  # seconds of load after the first 202 once the node is back
    max_requests: int = 12000
    drain_timeout: float = 90.0


@dataclass
class Phases:
    shutdown_at: float = 0.0
    down_at: float = 0.0  # shutdown returned: the VM has exited
    up_at: float = 0.0  # started again: took its first connection
    shutdown_seconds: float = 0.0
    start_seconds: float = 0.0


async def client(sender: Sender, n: int, stop: asyncio.Event, opts: Options) -> None:
    i = 0
    while not stop.is_set() and len(sender.tally.answers) < opts.max_requests:
        key = f"c{n}-{i}"
        match i % 3:
            case 0:
                await sender.deploy_once(
                    {"app": f"load-{n}", "version": f"r{i}", "image": "127.0.0.1:1/x:y"}
                )
            case 1:
                await sender.github_push_once(key)
            case _:
                await sender.gitlab_push_once(key)
        i += 1
        await asyncio.sleep(opts.pause)


async def restart(node: PrivateNode, phases: Phases) -> None:
    say(f"shutting down {node.node}")
    phases.shutdown_at = time.time()
    phases.shutdown_seconds = await node.shutdown()
    phases.down_at = time.time()
    say(f"down after {phases.shutdown_seconds:.1f} s; starting it again")
    phases.start_seconds = await node.start()
    phases.up_at = node.accepting_at
    say(f"up again after {phases.start_seconds:.1f} s")


async def first_202_after(sender: Sender, at: float, limit: float) -> float | None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = [t for t, status in sender.tally.answers if status == 202 and t > at]
        if found:
            return min(found)
        await asyncio.sleep(0.1)
    return None


async def run_load(stack: Stack, node: PrivateNode, opts: Options) -> tuple[Sender, Phases]:
    phases, stop = Phases(), asyncio.Event()
    async with Sender(
        stack.base_url,
        deploy_secret=stack.values["deploy"],
        github_secret=stack.values["github"],
        gitlab_token=stack.values["gitlab-token"],
        timeout=15.0,
    ) as sender:
        clients = [asyncio.create_task(client(sender, n, stop, opts)) for n in range(opts.clients)]
        try:
            await asyncio.sleep(opts.before)
            await restart(node, phases)
            back = await first_202_after(sender, phases.up_at, 60.0)
            if back is not None:
                await asyncio.sleep(opts.after)
        finally:
            stop.set()
            await asyncio.gather(*clients)
    return sender, phases


class Drain:
    """Everything in the tap queue and the history stream, by event id."""

    def __init__(self, url: str) -> None:
        self.bus = RabbitBus(BrokerSettings(url=url, history=True))
        self.tapped: list[str] = []
        self.history: set[str] = set()
        self.interruptions = 0

    async def _tap(self, message: Incoming) -> Outcome:
        self.tapped.append(message.message_id or "")
        return Ack()

    async def read(self, wanted: set[str], limit: float) -> None:
        await self.bus.start()
        consumer = await self.bus.consume(TAP, self._tap)
        reader = asyncio.create_task(self._history())
        deadline = time.monotonic() + limit
        try:
            while time.monotonic() < deadline:
                if wanted <= set(self.tapped) and wanted <= self.history:
                    await asyncio.sleep(1.0)  # a moment more, to see duplicates too
                    break
                await asyncio.sleep(0.2)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await consumer.stop()
            await self.bus.close()

    async def _history(self) -> None:
        while True:  # a dropped connection ends a reader: read again (ids are a set)
            try:
                async for event in self.bus.history():
                    self.history.add(event.id)
            except BrokerUnavailable:
                self.interruptions += 1
                await asyncio.sleep(0.5)


async def unknown_to_status_api(base_url: str, deployments: list[str]) -> list[str]:
    """Deployments GET /deployments/{id} does not know (waiting up to 30 s for the gateway's
    tracker to read the history stream again after the restart)."""
    unknown = list(deployments)
    deadline = time.monotonic() + 30.0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        while unknown and time.monotonic() < deadline:
            still = []
            for deployment in unknown:
                async with http.get(f"{base_url}/deployments/{deployment}") as r:
                    if r.status != 200:
                        still.append(deployment)
            unknown = still
            if unknown:
                await asyncio.sleep(1.0)
    return unknown


async def declare_tap(url: str) -> None:
    bus = RabbitBus(BrokerSettings(url=url, history=True))
    await bus.start()
    try:
        await bus.declare(TAP)
    finally:
        await bus.close()


async def run(root: Path, opts: Options | None = None) -> Result:
    opts = opts or Options()
    result = Result("broker_restart", "RabbitMQ restarted under a gateway load")
    started = time.monotonic()
    epmd_before = await epmd_names()
    node = PrivateNode(root / "rabbit")
    stack = Stack(root, StackConfig(broker_url=node.url))
    stack.extra_secrets["broker-password"] = node.password
    async with adopting_orphans():
        try:
            await _run(result, opts, node, stack)
        finally:
            await stack.close()
            await node.shutdown()
            await stop_epmd_if_idle(was_running=epmd_before is not None)
    result.seconds = time.monotonic() - started
    result.secrets, result.log_files = stack.secret_values(), stack.log_files()
    return result


async def _run(result: Result, opts: Options, node: PrivateNode, stack: Stack) -> None:
    say(f"starting the private node {node.node}")
    first_start = await node.start()
    say(f"node up after {first_start:.1f} s; declaring the tap queue, starting the gateway")
    await declare_tap(node.url)
    stack.write_config()
    await stack.start_process("gateway")
    sender, phases = await run_load(stack, node, opts)
    accepted = {i for a in sender.tally.accepted for i in a.event_ids}
    say(f"load done: {len(sender.tally.answers)} requests; reading every event back")
    drain = Drain(node.url)
    drain_started = time.monotonic()
    await drain.read(accepted, opts.drain_timeout)
    judge(result, sender, phases, accepted, drain)
    deployments = [a.deployment_id for a in sender.tally.accepted if a.deployment_id]
    unknown = await unknown_to_status_api(stack.base_url, deployments)
    result.check(
        "the status API knows every accepted deployment after the restart",
        not unknown,
        f"GET /deployments/{{id}} for {len(deployments)} deployments: {len(unknown)} not found",
    )
    result.facts["private node"] = (
        f"{node.node} on 127.0.0.1:{node.port}; first start {first_start:.1f} s, "
        f"shutdown {phases.shutdown_seconds:.1f} s, start again {phases.start_seconds:.1f} s"
    )
    result.facts["read back"] = f"{time.monotonic() - drain_started:.1f} s"


def judge(result: Result, sender: Sender, phases: Phases, accepted: set[str], drain: Drain) -> None:
    tally = sender.tally
    tapped = set(drain.tapped)
    lost_tap, lost_history = accepted - tapped, accepted - drain.history
    result.facts.update(
        {
            "requests": len(tally.answers),
            "HTTP answers": ", ".join(f"{c}: {n}" for c, n in sorted(tally.statuses.items())),
            "202s (event ids)": f"{sum(1 for _, s in tally.answers if s == 202)} ({len(accepted)})",
            "requests with no answer": f"{tally.connection_errors} refused, "
            f"{tally.ambiguous} cut off",
            "the outage as clients saw it": _outage(tally.answers, phases),
            "events read back": f"{len(drain.tapped)} from the queue "
            f"({len(drain.tapped) - len(tapped)} repeated), {len(drain.history)} in the history "
            f"({drain.interruptions} reads cut off and read again)",
            "delivered though answered 503": f"{len(tapped - accepted)} (the broker had them but "
            "no confirm came in time; a client's retry makes a duplicate, never a loss)",
        }
    )
    result.check(
        "every 202 was delivered",
        not lost_tap,
        f"{len(accepted)} event ids answered 202, {len(lost_tap)} never reached the queue",
    )
    when = {i: a.at for a in tally.accepted for i in a.event_ids}
    late = sorted(when[i] - phases.shutdown_at for i in lost_history)
    result.check(
        "every 202 is in the history stream",
        not lost_history,
        f"{len(lost_history)} of {len(accepted)} missing from the history stream"
        + (f", answered 202 at {', '.join(f'{t:+.2f}' for t in late)} s" if late else ""),
    )
    result.check(
        "the outage was seen and answered 503 with Retry-After",
        tally.statuses[503] > 0 and tally.no_retry_after == 0,
        f"{tally.statuses[503]} answers 503, {tally.no_retry_after} without Retry-After",
    )
    unexpected = {c: n for c, n in tally.statuses.items() if c not in (200, 202, 503)}
    result.check(
        "nothing but 202 and 503 (no 5xx crash, no refusal)",
        not unexpected and tally.connection_errors == 0,
        f"other answers: {unexpected or 'none'}; {tally.connection_errors} refused connections"
        + (f"; bodies: {[body for _, _, body in tally.refused[:3]]}" if tally.refused else ""),
    )
    back = any(s == 202 and t > phases.up_at for t, s in tally.answers)
    result.check(
        "the gateway recovered by itself",
        back,
        "answered 202 again without a restart" if back else "never answered 202 again",
    )


def _outage(answers: list[tuple[float, int]], phases: Phases) -> str:
    refused = [t for t, s in answers if s != 202 and t >= phases.shutdown_at]
    if not refused:
        return "no answer other than 202 after the shutdown began"
    first, last = min(refused), max(refused)
    resumed = min((t for t, s in answers if s == 202 and t > last), default=None)
    z = phases.shutdown_at
    back = "never" if resumed is None else f"{resumed - phases.up_at:+.1f} s"
    return (
        f"answers other than 202 from {first - z:+.1f} s to {last - z:+.1f} s after the shutdown "
        f"began (the VM was gone at {phases.down_at - z:+.1f} s, took connections again at "
        f"{phases.up_at - z:+.1f} s); 202s again {back} from then"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="keep the run's files (logs) in this directory")
    args = parser.parse_args()
    return run_alone(run, prefix="relay-chaos-broker-", keep=args.keep)


if __name__ == "__main__":
    raise SystemExit(main())
