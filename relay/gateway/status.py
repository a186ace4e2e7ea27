"""Status routes: ``GET /deployments``, ``GET /deployments/{id}`` and its Server-Sent Events.

The tracker is fed by a background task that taps every event on the bus; the SSE stream sends
one event per stage change (``id:`` the CloudEvent id, ``event:`` its routing key, ``data:`` the
CloudEvent JSON), heartbeat comments while nothing happens, resumes after ``Last-Event-ID`` and
closes after the terminal event.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Sequence

import structlog
from aiohttp import web

from relay.bus import Bus
from relay.events import CloudEvent
from relay.tracker import Tracker

log = structlog.get_logger(__name__)

TRACKER: web.AppKey[Tracker] = web.AppKey("tracker", Tracker)
Listener = Callable[[CloudEvent], None]
FEED_STOP_GRACE = 5.0  # seconds the tracker feed gets to stop when the application does
STATUSES = (
    "pending",
    "building",
    "committing",
    "reconciling",
    "rolling-out",
    "ready",
    "failed",
    "deleted",
)
HEARTBEAT_SECONDS = 15.0
UNKNOWN_GRACE_SECONDS = 2.0
# ASCII digits only: int() also takes " 7", "1_0" and other scripts' digits
WHOLE_NUMBER = re.compile(r"^-?[0-9]{1,4000}$")  # int() refuses over 4300 digits


async def list_deployments(request: web.Request) -> web.Response:
    query = request.query
    status = query.get("status")
    if status is not None and status not in STATUSES:
        return _json_error(400, "bad_query", f"status must be one of {', '.join(STATUSES)}")
    limit_raw, offset_raw = query.get("limit", "50"), query.get("offset", "0")
    if not WHOLE_NUMBER.fullmatch(limit_raw) or not WHOLE_NUMBER.fullmatch(offset_raw):
        return _json_error(400, "bad_query", "limit and offset must be whole numbers")
    limit = min(max(int(limit_raw), 1), 500)
    offset = max(int(offset_raw), 0)
    found = request.app[TRACKER].list(
        app=query.get("app"), status=status, limit=limit, offset=offset
    )
    return web.json_response(
        {"deployments": [d.public() for d in found], "limit": limit, "offset": offset}
    )


async def _known(tracker: Tracker, deployment_id: str) -> bool:
    """Whether the deployment is known, waiting a moment for one another replica just accepted."""
    for _ in range(int(UNKNOWN_GRACE_SECONDS / 0.05)):
        if tracker.get(deployment_id) is not None:
            return True
        await asyncio.sleep(0.05)
    return tracker.get(deployment_id) is not None


async def get_deployment(request: web.Request) -> web.Response:
    tracker = request.app[TRACKER]
    await _known(tracker, request.match_info["id"])
    found = tracker.get(request.match_info["id"])
    if found is None:
        return _json_error(404, "not_found", "no deployment with that id")
    return web.json_response(found.public())


async def deployment_events(request: web.Request) -> web.StreamResponse:
    tracker = request.app[TRACKER]
    deployment_id = request.match_info["id"]
    if not await _known(tracker, deployment_id):
        return _json_error(404, "not_found", "no deployment with that id")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    after = request.headers.get("Last-Event-ID")
    try:
        async for chunk in _sse(tracker, deployment_id, after):
            await response.write(chunk)
        await response.write_eof()
    except ConnectionResetError:
        log.debug("event stream client went away", deployment_id=deployment_id)
    return response


async def _sse(tracker: Tracker, deployment_id: str, after: str | None) -> AsyncIterator[bytes]:
    events = tracker.follow(deployment_id, after=after).__aiter__()
    pending: asyncio.Future[CloudEvent] | None = None
    try:
        while True:
            pending = pending or asyncio.ensure_future(events.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=HEARTBEAT_SECONDS)
            if not done:
                yield b": heartbeat\n\n"
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            data = event.model_dump_json(exclude_none=True)
            yield f"id: {event.id}\nevent: {event.routing_key}\ndata: {data}\n\n".encode()
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending


def _json_error(status: int, code: str, detail: str) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status)


async def feed(
    bus: Bus, tracker: Tracker, *, history: bool, listeners: Sequence[Listener] = ()
) -> None:
    """Apply every event to the tracker (and ``listeners``) until cancelled: first the recorded
    history (so a restarted gateway shows the same timelines), then live; re-reads after a
    broken connection."""
    while True:
        try:
            events = bus.history() if history else bus.tap(("#",))
            async for event in events:
                tracker.apply(event)
                for listener in listeners:
                    listener(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("tracker feed interrupted", error=str(exc))
            await asyncio.sleep(1.0)


def add_routes(
    app: web.Application,
    bus: Bus,
    *,
    history: bool,
    tracker: Tracker | None = None,
    listeners: Sequence[Listener] = (),
) -> Tracker:
    """Mount the status routes and the tracker feed (which also calls ``listeners``)."""
    tracker = tracker or Tracker()
    app[TRACKER] = tracker
    app.router.add_get("/deployments", list_deployments)
    app.router.add_get("/deployments/{id}", get_deployment)
    app.router.add_get("/deployments/{id}/events", deployment_events)

    async def run_feed(app: web.Application) -> AsyncIterator[None]:
        following = feed(bus, tracker, history=history, listeners=listeners)
        task = asyncio.create_task(following, name="tracker-feed")
        yield
        task.cancel()
        # bounded: a history reader whose channel is gone can take long to notice the cancel
        _, pending = await asyncio.wait({task}, timeout=FEED_STOP_GRACE)
        if pending:
            log.warning("tracker feed did not stop in time; left behind", seconds=FEED_STOP_GRACE)

    app.cleanup_ctx.append(run_feed)
    return tracker
