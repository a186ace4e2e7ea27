"""``POST /deploy`` and ``DELETE /apps/{app}``: signed requests from n8n (or ``relay deploy``).

Each request carries ``X-Relay-Timestamp`` / ``X-Relay-Signature`` (or Standard Webhooks
headers) over ``"<timestamp>.<raw body>"``, fresh within ``deploy.signature_window`` and used
once; the body is the deploy request model (422 names the bad field). ``Idempotency-Key`` or
``webhook-id`` makes a resent request answer 200 with the deployment it already started.

A request's deployment id and first event id derive from its signature (``signed_ids``), so every
gateway replica gives the same ones: each replica learns the ids used at the others from the event
history (``SignatureLedger.learn``) and refuses the replay with 409, and two replicas taking one
request at the same moment publish the same event for the same deployment.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from relay.events.data import AppDeleteRequested, DeployRequested, EventData
from relay.events.deploy import DeployRequest, check_app_name
from relay.gateway.body import read_body, require_media_type
from relay.gateway.errors import BadRequest, NotFound, Unprocessable
from relay.gateway.publish import event_for, publish_confirmed
from relay.gateway.state import STATE, GatewayState
from relay.gateway.status import TRACKER
from relay.logging import bind_context
from relay.receivers.base import load_json
from relay.signing import verify_relay

log = structlog.get_logger(__name__)
IDEMPOTENCY_HEADERS = ("Idempotency-Key", "webhook-id")
SIGNED = uuid.UUID("0c4f3a52-9d1e-4c8b-a1f6-5e2b7d90c3a4")  # namespace of signature-derived ids


def signed_ids(method: str, signature: str) -> tuple[str, str]:
    """(first event id, deployment id) of the request ``method`` signed with ``signature``."""
    event_id = uuid.uuid5(SIGNED, f"event {method} {signature}")
    deployment_id = uuid.uuid5(SIGNED, f"deployment {method} {signature}")
    return str(event_id), str(deployment_id)


def _configured(state: GatewayState) -> None:
    if not state.deploy_secrets:
        raise NotFound("deploys are not configured (deploy.secret_file)", code="deploy_disabled")


async def _signed_body(request: web.Request, state: GatewayState) -> tuple[bytes, str]:
    http = state.settings.http
    body = await read_body(request, limit=http.max_body_bytes, within=http.read_timeout)
    window = state.settings.deploy.signature_window
    signature = verify_relay(request.headers, body, state.deploy_secrets, window=window)
    return body, signature


def parse_request(body: bytes) -> DeployRequest:
    """The deploy request in ``body``: 400 when it is not JSON, 422 naming the bad field."""
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise BadRequest("the body must be a JSON object", code="malformed_payload")
    try:
        return DeployRequest.model_validate(payload)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "(body)"
        message = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        message = message.removeprefix("Value error, ")
        raise Unprocessable(f"{where}: {message}", extra={"field": where}) from None


def _links(state: GatewayState, deployment_id: str, app: str) -> dict[str, str]:
    status_url = f"{state.settings.public_base_url()}/deployments/{deployment_id}"
    return {
        "deployment_id": deployment_id,
        "app": app,
        "status_url": status_url,
        "events_url": f"{status_url}/events",
    }


async def _start(
    request: web.Request, state: GatewayState, app: str, data: EventData, ids: tuple[str, str]
) -> web.Response:
    """Publish the first event of a new deployment (once per idempotency key)."""
    key = next((request.headers[h] for h in IDEMPOTENCY_HEADERS if request.headers.get(h)), None)
    if key is not None:
        fresh, seen = await state.deploys.begin(f"{request.method} {key}")
        if not fresh:
            return web.json_response({**seen, "duplicate": True})
    event_id, deployment_id = ids
    try:
        event = event_for(
            data,
            source=request.path,
            subject=app,
            deploymentid=deployment_id,
            app=app,
            event_id=event_id,
        )
        with bind_context(deployment_id=deployment_id, app=app, event_id=event.id):
            await publish_confirmed(state, event, essential=True)
            log.info("deployment requested", routing_key=event.routing_key)
        # The links answered below work at once here; other replicas learn it from the history.
        if TRACKER in request.app:
            request.app[TRACKER].apply(event)
    except BaseException:
        if key is not None:
            state.deploys.abandon(f"{request.method} {key}")
        raise
    answer: dict[str, Any] = {**_links(state, deployment_id, app), "event_id": event.id}
    if key is not None:
        state.deploys.finish(f"{request.method} {key}", answer)
    return web.json_response(answer, status=202)


async def deploy(request: web.Request) -> web.Response:
    state = request.app[STATE]
    _configured(state)
    state.limit(request, "deploy")
    require_media_type(request, {"application/json"})
    body, signature = await _signed_body(request, state)
    ids = signed_ids(request.method, signature)
    async with state.signatures.once(ids[0]):
        wanted = parse_request(body)
        data = DeployRequested(
            request=wanted,
            version=wanted.version,
            callback_url=str(wanted.callback_url) if wanted.callback_url else None,
            requested_at=datetime.now(UTC),
        )
        return await _start(request, state, wanted.app, data, ids)


async def delete_app(request: web.Request) -> web.Response:
    state = request.app[STATE]
    _configured(state)
    state.limit(request, "deploy")
    _, signature = await _signed_body(request, state)
    ids = signed_ids(request.method, signature)
    async with state.signatures.once(ids[0]):
        app = request.match_info["app"]
        try:
            check_app_name(app)
        except ValueError as exc:
            raise Unprocessable(f"app: {exc}", extra={"field": "app"}) from None
        deleting = AppDeleteRequested(requested_at=datetime.now(UTC))
        return await _start(request, state, app, deleting, ids)
