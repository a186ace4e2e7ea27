"""Publishing from a request: answer only after the broker confirmed, within a bound.

A request is answered 202 only once ``bus.publish`` returned; no connection, a nack, a return
or no confirm within ``http.publish_timeout`` becomes ``Unavailable`` (503 + Retry-After).
An unroutable event nobody must receive (a ping, an informational ``git.<event>``) is reported
as not routed instead, so an unused event type is not an outage.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from relay.errors import PublishError, Unroutable
from relay.events import CloudEvent
from relay.gateway.errors import Unavailable
from relay.gateway.state import GatewayState

log = structlog.get_logger(__name__)


async def publish_confirmed(state: GatewayState, event: CloudEvent, *, essential: bool) -> bool:
    """True once confirmed; False when unroutable and not ``essential``; else raises."""
    if not state.bus.connected:
        raise Unavailable("the broker is not connected; retry shortly")
    bound = state.settings.http.publish_timeout
    kind = event.routing_key.split(".", 1)[0]
    started = time.perf_counter()
    outcome = "confirmed"
    try:
        async with asyncio.timeout(bound):
            await state.bus.publish(event)
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
