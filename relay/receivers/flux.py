"""Flux notification-controller events, as its ``generic-hmac`` provider posts them.

Verified like ``generic-hmac`` (``X-Signature``); published as ``flux.event``. The receiver's
``events:`` filter matches the event's severity (``info``, ``error``).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from relay.events.data import FluxEvent, FluxObject
from relay.receivers.base import Headers, ParsedEvent, PayloadError, Provider, Receiver, load_object
from relay.receivers.generic import verify_hmac


def _revision(metadata: dict[str, str]) -> str | None:
    if "revision" in metadata:
        return metadata["revision"]
    return next((v for k, v in metadata.items() if k.endswith("/revision")), None)


def parse(headers: Headers, raw_body: bytes, receiver: Receiver) -> list[ParsedEvent]:
    payload = load_object(headers, raw_body)
    raw_meta: Any = payload.get("metadata") or {}
    metadata = {str(k): str(v) for k, v in raw_meta.items()} if isinstance(raw_meta, dict) else {}
    try:
        data = FluxEvent(
            receiver=receiver.name,
            involved_object=FluxObject.model_validate(payload.get("involvedObject")),
            severity=payload.get("severity"),
            reason=payload.get("reason"),
            message=payload.get("message"),
            revision=_revision(metadata),
            reporting_controller=payload.get("reportingController"),
            metadata=metadata,
            timestamp=payload.get("timestamp"),
        )
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        raise PayloadError(f"not a Flux event: {where}: {err['msg']}") from None
    obj = data.involved_object
    return [
        ParsedEvent(
            routing_key=data.ROUTING_KEY,
            data=data,
            event=data.severity,
            subject=f"{obj.kind}/{obj.namespace or ''}/{obj.name}",
        )
    ]


PROVIDER = Provider(
    name="flux",
    content_types=frozenset({"application/json"}),
    event_name=lambda headers: "",
    delivery_id=lambda headers: None,
    verify=verify_hmac,
    parse=parse,
)
