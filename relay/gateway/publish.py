"""Publishing from a request: answer only after the broker confirmed, within a bound.

A request is answered 202 only once the bus's publish returned; no connection, a nack, a return
or no confirm within ``http.publish_timeout`` becomes ``Unavailable`` (503 + Retry-After).
An unroutable event nobody must receive (a ping, an informational ``git.<event>``) is reported
as not routed instead, so an unused event type is not an outage. Data that no event can carry
is refused with 400 before anything is published.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from relay.errors import PublishError, Unroutable
from relay.events import CloudEvent, encode, new_event
from relay.events.data import EventData
from relay.gateway.errors import Unavailable
from relay.gateway.state import GatewayState
from relay.receivers import PayloadError

log = structlog.get_logger(__name__)


async def publish_confirmed(state: GatewayState, event: CloudEvent, *, essential: bool) -> bool:
    """True once confirmed; False when unroutable and not ``essential``; else raises."""
    if not state.bus.connected:
        raise Unavailable("the broker is not connected; retry shortly")
    body = _encoded(event)
    bound = state.settings.http.publish_timeout
    kind = event.routing_key.split(".", 1)[0]
    started = time.perf_counter()
    outcome = "confirmed"
    try:
        async with asyncio.timeout(bound):
            await state.bus.publish_raw(body, routing_key=event.routing_key, message_id=event.id)
        return True
    except TimeoutError:
        outcome = "timeout"
        raise Unavailable(f"the broker did not confirm within {bound:g} s") from None
    except Unroutable:
        outcome = "unroutable"
        if essential:
            raise Unavailable(f"no queue is bound to {event.routing_key} yet") from None
        return False
    except PublishError as exc:
        outcome = "failed"
        log.warning("publish failed", routing_key=event.routing_key, error=str(exc))
        raise Unavailable(f"the broker did not take the event: {exc}") from None
    finally:
        elapsed = time.perf_counter() - started
        state.metrics.publish_seconds.labels(kind, outcome).observe(elapsed)


def event_for(data: EventData, **fields: Any) -> CloudEvent:
    """``new_event`` for a request: data no event can carry (a lone UTF-16 surrogate, nesting
    deeper than the serialiser goes) is the sender's fault, so 400 and nothing published."""
    try:
        return new_event(data, **fields)
    except ValueError as exc:
        raise PayloadError(f"the payload cannot be carried in an event: {exc}") from None


def _encoded(event: CloudEvent) -> bytes:
    try:
        return encode(event)
    except ValueError as exc:
        raise PayloadError(f"the payload cannot be carried in an event: {exc}") from None
