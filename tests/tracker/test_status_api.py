"""The tracker and the status routes: timelines, filters and the SSE stream, on the memory bus."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from relay.bus.memory import MemoryBus
from relay.events import CloudEvent, new_event
from relay.events.data import (
    DeployFailed,
    DeployReady,
    DeployRequested,
    EventData,
    ImagePushed,
    ManifestsCommitted,
    ReconcileCompleted,
)
from relay.events.deploy import DeployRequest
from relay.gateway.app import create_app
from relay.settings import Settings
from relay.tracker import Tracker

REQUEST = DeployRequest(app="hello", version="v1", image="127.0.0.1:5000/hello:v1")
IMAGE = "127.0.0.1:5000/hello:v1@sha256:" + "b" * 64


def chain(deployment: str) -> list[EventData]:
    return [
        DeployRequested(request=REQUEST, version="v1"),
        ImagePushed(image=IMAGE, request=REQUEST, version="v1"),
        ManifestsCommitted(commit="abc123", paths=["x"], image=IMAGE, version="v1"),
        ReconcileCompleted(commit="abc123", skipped="skipped: no Kubernetes configured"),
        DeployReady(url="https://hello.apps.example.com", image=IMAGE, commit="abc123"),
    ]


def event(data: EventData, deployment: str = "d1", app: str = "hello") -> CloudEvent:
    return new_event(data, source="/test", deploymentid=deployment, app=app)


def test_projection_walks_every_stage_and_ignores_redeliveries() -> None:
    tracker = Tracker()
    events = [event(d) for d in chain("d1")]
    for e in events:
        tracker.apply(e)
    tracker.apply(events[1])  # a redelivery changes nothing
    found = tracker.get("d1")
    assert found is not None
    assert found.status == "ready"
    assert [s.name for s in found.stages] == ["build", "commit", "reconcile", "rollout"]
    assert all(s.finished is not None and s.seconds is not None for s in found.stages)
    assert found.stage("reconcile") is not None and found.stage("reconcile").note  # type: ignore[union-attr]
    assert (found.image, found.commit, found.url) == (
        IMAGE,
        "abc123",
        "https://hello.apps.example.com",
    )


def test_failure_is_terminal_and_carries_the_error() -> None:
    tracker = Tracker()
    tracker.apply(event(DeployRequested(request=REQUEST, version="v1"), "d2"))
    older = event(ImagePushed(image=IMAGE, request=REQUEST), "d2")  # published before the failure
    tracker.apply(
        event(DeployFailed(stage="build", reason="image_not_found", detail="no tag"), "d2")
    )
    tracker.apply(older)  # redelivered late: ignored
    found = tracker.get("d2")
    assert found is not None and found.status == "failed"
    assert found.error == {"stage": "build", "reason": "image_not_found", "detail": "no tag"}


async def test_a_replayed_failure_goes_on_to_ready_and_followers_see_it_through() -> None:
    """`relay dlq replay` of a failed commit: newer stage events take the deployment on."""
    tracker = Tracker()
    first = [event(d, "d3") for d in chain("d3")[:2]]
    failed = event(DeployFailed(stage="commit", reason="git_unreachable", detail="down"), "d3")
    for e in [*first, failed]:
        tracker.apply(e)
    await asyncio.sleep(0.001)  # the replayed work's events are newer than the failure
    replayed = [event(d, "d3") for d in chain("d3")[2:]]
    tracker.apply(replayed[0])
    found = tracker.get("d3")
    assert found is not None and (found.status, found.error) == ("reconciling", None)
    for e in replayed[1:]:
        tracker.apply(e)
    assert found.status == "ready"
    assert [s.name for s in found.stages] == ["build", "commit", "reconcile", "rollout"]
    seen = [e.id async for e in tracker.follow("d3")]
    assert seen == [e.id for e in [*first, failed, *replayed]]


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient[web.Request, web.Application], MemoryBus]]:
    bus = MemoryBus()
    await bus.start()
    app = create_app(settings=Settings(), bus=bus)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        await asyncio.sleep(0)  # let the tracker feed subscribe
        yield test_client, bus
    await bus.close()


async def publish_all(bus: MemoryBus, events: list[CloudEvent], pause: float = 0.0) -> None:
    for e in events:
        await bus.publish(e)
        await asyncio.sleep(pause)


async def read_sse(body: bytes) -> list[dict[str, str]]:
    frames = []
    for block in body.decode().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if fields:
            frames.append(fields)
    return frames


async def test_routes_show_the_timeline_and_filter(
    client: tuple[TestClient[web.Request, web.Application], MemoryBus],
) -> None:
    http, bus = client
    await publish_all(bus, [event(d) for d in chain("d1")])
    await publish_all(bus, [event(DeployRequested(request=REQUEST, version="v2"), "d3", "other")])
    await asyncio.sleep(0.05)
    one = await (await http.get("/deployments/d1")).json()
    assert one["status"] == "ready" and one["app"] == "hello" and one["version"] == "v1"
    assert [s["name"] for s in one["stages"]] == ["build", "commit", "reconcile", "rollout"]
    listed = await (await http.get("/deployments", params={"app": "other"})).json()
    assert [d["deployment_id"] for d in listed["deployments"]] == ["d3"]
    building = await (await http.get("/deployments", params={"status": "building"})).json()
    assert [d["deployment_id"] for d in building["deployments"]] == ["d3"]
    missing = await http.get("/deployments/nope")
    assert missing.status == 404 and (await missing.json())["error"] == "not_found"
    bad = await http.get("/deployments", params={"status": "weird"})
    assert bad.status == 400


async def test_sse_streams_every_stage_in_order_resumes_and_closes(
    client: tuple[TestClient[web.Request, web.Application], MemoryBus],
) -> None:
    http, bus = client
    events = [event(d) for d in chain("d1")]
    await publish_all(bus, events[:1])
    await asyncio.sleep(0.05)
    response_task = asyncio.create_task(http.get("/deployments/d1/events"))
    await asyncio.sleep(0.05)
    await publish_all(bus, events[1:], pause=0.02)
    response = await asyncio.wait_for(response_task, 5)
    frames = await read_sse(await asyncio.wait_for(response.read(), 5))
    assert [f["event"] for f in frames] == [e.routing_key for e in events]
    assert [f["id"] for f in frames] == [e.id for e in events]
    assert json.loads(frames[-1]["data"])["type"] == "dev.relay.deploy.ready"
    resumed = await http.get("/deployments/d1/events", headers={"Last-Event-ID": events[2].id})
    again = await read_sse(await asyncio.wait_for(resumed.read(), 5))
    assert [f["id"] for f in again] == [e.id for e in events[3:]]
