"""The notify worker against a real HTTP receiver on loopback, through the real runtime."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.bus import Ack, DeadLetter, Incoming, Retry
from relay.bus.memory import MemoryBus
from relay.events import encode, new_event
from relay.events.data import DeployFailed, DeployReady
from relay.settings import Settings
from workers.notify import NotifyWorker
from workers.notify.delivery import parse_retry_after
from workers.runtime import Dispatcher

SECRET = "callback-secret-123"


@dataclass
class Receiver:
    """A callback receiver scripted with the answers it gives, in order."""

    answers: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        status, text, headers = self.answers.pop(0) if self.answers else (200, "ok", {})
        return web.Response(status=status, text=text, headers=headers)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    scripted = Receiver()
    app = web.Application()
    app.router.add_post("/webhook-waiting/{id}", scripted.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield scripted, str(server.make_url("/webhook-waiting/42"))
    finally:
        await server.close()


def settings(tmp_path: Path, **callback: object) -> Settings:
    (tmp_path / "deploy").write_text(SECRET)
    (tmp_path / "hdr").write_text("static-header-value")
    return Settings(
        deploy={
            "secret_file": tmp_path / "deploy",
            "callback": {
                "retry_schedule": [0.01, 0.02, 0.03],
                "header_name": "X-N8N-Auth",
                "header_value_file": tmp_path / "hdr",
                **callback,
            },
        },
        broker={"retry": {"delays": [0.01], "max_attempts": 2}},
    )


def ready_message(url: str) -> Incoming:
    event = new_event(
        DeployReady(
            version="v1",
            callback_url=url,
            url="https://hello.apps.example.com",
            image="127.0.0.1:5000/hello:v1@sha256:" + "a" * 64,
            commit="c0ffee",
            stages={"build": 1.5, "commit": 0.5},
        ),
        source="/test",
        app="hello",
        deploymentid="dep-1",
    )
    return Incoming(
        body=encode(event), routing_key=event.routing_key, message_id=event.id, content_type=None
    )


async def dispatch(
    tmp_path: Path, message: Incoming, **callback: object
) -> tuple[object, NotifyWorker]:
    worker = NotifyWorker(settings(tmp_path, **callback))
    bus = MemoryBus()
    await bus.start()
    try:
        outcome = await Dispatcher(worker, bus, max_attempts=2)(message)
    finally:
        await worker.close()
    return outcome, worker


async def test_one_signed_callback_after_two_server_errors(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    scripted, url = receiver
    scripted.answers = [(500, "boom", {}), (500, "boom", {}), (200, "ok", {})]
    outcome, _ = await dispatch(tmp_path, ready_message(url))
    assert outcome == Ack()
    assert len(scripted.received) == 3
    headers, body = scripted.received[-1]
    expected = hmac.new(
        SECRET.encode(), f"{headers['X-Relay-Timestamp']}.".encode() + body, hashlib.sha256
    )
    assert headers["X-Relay-Signature"] == "sha256=" + expected.hexdigest()
    assert headers["X-N8N-Auth"] == "static-header-value"
    payload = json.loads(body)
    assert payload == {
        "deployment_id": "dep-1",
        "app": "hello",
        "version": "v1",
        "status": "ready",
        "url": "https://hello.apps.example.com",
        "image": "127.0.0.1:5000/hello:v1@sha256:" + "a" * 64,
        "commit": "c0ffee",
        "stages": {"build": 1.5, "commit": 0.5},
        "error": None,
    }


async def test_n8n_running_already_is_retried_and_finished_already_stops(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    scripted, url = receiver
    scripted.answers = [
        (409, "The execution 42 is running already", {}),
        (409, "The execution 42 has finished already", {}),
    ]
    outcome, _ = await dispatch(tmp_path, ready_message(url))
    assert outcome == Ack()
    assert len(scripted.received) == 2


async def test_gone_stops_and_other_client_errors_are_permanent(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    scripted, url = receiver
    scripted.answers = [(410, "gone", {})]
    outcome, _ = await dispatch(tmp_path, ready_message(url))
    assert outcome == Ack() and len(scripted.received) == 1
    scripted.answers = [(400, "bad", {})]
    outcome, _ = await dispatch(tmp_path, ready_message(url))
    assert isinstance(outcome, DeadLetter) and "callback_rejected" in outcome.error


async def test_exhausted_schedule_retries_through_the_bus_then_dead_letters_without_deploy_failed(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    scripted, url = receiver
    scripted.answers = [(503, "down", {})] * 8
    message = ready_message(url)
    outcome, _ = await dispatch(tmp_path, message)
    assert isinstance(outcome, Retry)
    last = Incoming(**{**message.__dict__, "attempt": 2})
    bus = MemoryBus()
    await bus.start()
    seen: list[str] = []
    tap = bus.tap(("#",))

    async def collect() -> None:
        async for event in tap:
            seen.append(event.routing_key)

    collector = asyncio.create_task(collect())
    worker = NotifyWorker(settings(tmp_path))
    outcome = await Dispatcher(worker, bus, max_attempts=2)(last)
    await worker.close()
    collector.cancel()
    assert isinstance(outcome, DeadLetter) and "callback_failed" in outcome.error
    assert seen == []  # a failed notification is not a failed deployment


async def test_failed_deploy_callback_carries_the_error(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    scripted, url = receiver
    event = new_event(
        DeployFailed(
            version="v2",
            callback_url=url,
            stage="build",
            reason="image_not_found",
            detail="no such tag",
        ),
        source="/test",
        app="hello",
        deploymentid="dep-2",
    )
    message = Incoming(
        body=encode(event), routing_key=event.routing_key, message_id=event.id, content_type=None
    )
    outcome, _ = await dispatch(tmp_path, message)
    assert outcome == Ack()
    payload = json.loads(scripted.received[0][1])
    assert payload["status"] == "failed"
    assert payload["error"] == {
        "stage": "build",
        "reason": "image_not_found",
        "detail": "no such tag",
    }


def test_retry_after_parsing() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("not a date") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


async def test_sinks_get_their_own_message_once(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    scripted, url = receiver
    (tmp_path / "slack").write_text(url)
    (tmp_path / "discord").write_text(url)
    base = settings(tmp_path)
    worker = NotifyWorker(
        Settings(
            deploy=base.deploy,
            broker=base.broker,
            notify={
                "sinks": [
                    {
                        "type": "slack",
                        "url_file": tmp_path / "slack",
                        "template": "{app} {version}: {status}",
                    },
                    {
                        "type": "discord",
                        "url_file": tmp_path / "discord",
                        "events": ["deploy.failed"],
                    },
                ]
            },
        )
    )
    bus = MemoryBus()
    await bus.start()
    message = ready_message(url)
    dispatcher = Dispatcher(worker, bus, max_attempts=2)
    assert await dispatcher(message) == Ack()
    assert await dispatcher(message) == Ack()  # redelivered: nothing is sent twice
    await worker.close()
    bodies = [json.loads(body) for _, body in scripted.received]
    assert len(bodies) == 2  # the callback and the Slack sink; Discord wants only failures
    assert bodies[1] == {"text": "hello v1: ready"}
