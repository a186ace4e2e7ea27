"""Signed deploy requests: POST /deploy and DELETE /apps/{app}."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from relay.events.deploy import DeployRequest
from relay.signing import sign_headers, standard_headers
from tests.gateway.conftest import DEPLOY_SECRET, Harness

GOOD: dict[str, Any] = {
    "app": "hello",
    "version": "v1",
    "image": "127.0.0.1:5000/hello:v1",
    "port": 8080,
    "env": {"KEY": "value"},
    "callback_url": "https://n8n.example.com/webhook-waiting/42",
}


def signed_json(
    payload: Any, *, timestamp: int | None = None, secret: str = DEPLOY_SECRET, **more: str
) -> tuple[bytes, dict[str, str]]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", **sign_headers(secret, body, timestamp), **more}
    return body, headers


async def deploy(h: Harness, payload: Any, **kw: Any) -> Any:
    body, headers = signed_json(payload, **kw)
    return await h.client.post("/deploy", data=body, headers=headers)


async def test_deploy_accepted_after_confirm(gateway: Harness) -> None:
    resp = await deploy(gateway, GOOD)
    assert resp.status == 202, await resp.text()
    answer = await resp.json()
    dep = answer["deployment_id"]
    base = gateway.settings.public_base_url()
    assert answer["app"] == "hello"
    assert answer["status_url"] == f"{base}/deployments/{dep}"
    assert answer["events_url"] == f"{base}/deployments/{dep}/events"
    event = await gateway.events.get()
    assert event["type"] == "dev.relay.deploy.requested"
    assert (event["deploymentid"], event["app"], event["subject"]) == (dep, "hello", "hello")
    assert event["id"] == answer["event_id"]
    data = event["data"]
    assert data["version"] == "v1"
    assert data["callback_url"] == GOOD["callback_url"]
    assert abs(time.time() - _epoch(data["requested_at"])) < 30
    assert data["request"]["app"] == "hello"
    assert data["request"]["image"] == GOOD["image"]
    assert data["request"]["env"] == {"KEY": "value"}


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


async def test_inline_source_deploy(memory_gateway: Harness) -> None:
    payload = {
        "app": "web",
        "version": "2024.1",
        "source": {
            "files": {"app.py": "print(1)", "static/index.html": "<p>"},
            "dockerfile": "FROM scratch",
        },
    }
    resp = await deploy(memory_gateway, payload)
    assert resp.status == 202
    event = await memory_gateway.events.get()
    assert event["data"]["request"]["source"]["files"]["static/index.html"] == "<p>"


async def test_replayed_signature_is_409(gateway: Harness) -> None:
    body, headers = signed_json(GOOD)
    first = await gateway.client.post("/deploy", data=body, headers=headers)
    again = await gateway.client.post("/deploy", data=body, headers=headers)
    assert (first.status, again.status) == (202, 409)
    assert (await again.json())["error"] == "replayed_signature"
    await gateway.events.get()
    assert await gateway.events.empty()


@pytest.mark.parametrize(("skew", "code"), [(-301, "stale_timestamp"), (301, "future_timestamp")])
async def test_stale_and_future_timestamps(gateway: Harness, skew: int, code: str) -> None:
    resp = await deploy(gateway, GOOD, timestamp=int(time.time()) + skew)
    assert resp.status == 401
    assert (await resp.json())["error"] == code
    assert await gateway.events.empty(0.1)


async def test_wrong_deploy_secret_and_missing_headers(memory_gateway: Harness) -> None:
    assert (await deploy(memory_gateway, GOOD, secret="guess")).status == 401
    body = json.dumps(GOOD).encode()
    resp = await memory_gateway.client.post(
        "/deploy", data=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 401 and (await resp.json())["error"] == "missing_signature"
    assert await memory_gateway.events.empty(0.05)


async def test_standard_webhooks_headers_accepted(memory_gateway: Harness) -> None:
    body = json.dumps(GOOD).encode()
    headers = {
        "Content-Type": "application/json",
        **standard_headers(DEPLOY_SECRET, "msg_deploy_1", body),
    }
    resp = await memory_gateway.client.post("/deploy", data=body, headers=headers)
    assert resp.status == 202
    again = await memory_gateway.client.post("/deploy", data=body, headers=headers)
    assert again.status == 409


async def test_idempotency_key_returns_the_same_deployment(memory_gateway: Harness) -> None:
    now, key = int(time.time()), {"Idempotency-Key": "n8n-run-7"}
    first = await deploy(memory_gateway, GOOD, timestamp=now, **key)
    again = await deploy(memory_gateway, GOOD, timestamp=now + 1, **key)  # re-signed resend
    assert (first.status, again.status) == (202, 200)
    one, two = await first.json(), await again.json()
    assert two["duplicate"] is True and two["deployment_id"] == one["deployment_id"]
    await memory_gateway.events.get()
    assert await memory_gateway.events.empty(0.1)


async def test_malformed_json_and_content_type(gateway: Harness) -> None:
    resp = await deploy(gateway, b"{nope")
    assert resp.status == 400 and (await resp.json())["error"] == "malformed_payload"
    resp = await deploy(gateway, b"[]")
    assert resp.status == 400
    body, headers = signed_json(GOOD)
    resp = await gateway.client.post(
        "/deploy", data=body, headers=headers | {"Content-Type": "text/plain"}
    )
    assert resp.status == 415
    assert await gateway.events.empty(0.1)


BAD_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({**GOOD, "replicas_count": 3}, "replicas_count"),
    ({**GOOD, "app": "Hello"}, "app"),
    ({**GOOD, "app": "hello.world"}, "app"),
    ({**GOOD, "app": ".."}, "app"),
    ({**GOOD, "app": "hello;rm"}, "app"),
    ({**GOOD, "app": "a" * 70}, "app"),
    ({**GOOD, "version": "v1;x"}, "version"),
    (
        {
            **{k: v for k, v in GOOD.items() if k != "image"},
            "source": {"files": {"../escape": "x"}, "dockerfile": "FROM scratch"},
        },
        "source.files",
    ),
    (
        {
            **{k: v for k, v in GOOD.items() if k != "image"},
            "source": {"files": {"/etc/passwd": "x"}, "dockerfile": "FROM scratch"},
        },
        "source.files",
    ),
    (
        {
            **{k: v for k, v in GOOD.items() if k != "image"},
            "source": {"files": {"a\x00b": "x"}, "dockerfile": "FROM scratch"},
        },
        "source.files",
    ),
    (
        {
            **{k: v for k, v in GOOD.items() if k != "image"},
            "source": {"files": {"ok/../../up": "x"}, "dockerfile": "FROM scratch"},
        },
        "source.files",
    ),
    ({**GOOD, "port": 70000}, "port"),
    ({k: v for k, v in GOOD.items() if k != "image"}, "(body)"),
]


@pytest.mark.parametrize(("payload", "field"), BAD_FIELDS)
async def test_invalid_requests_are_422_naming_the_field(
    gateway: Harness, payload: dict[str, Any], field: str
) -> None:
    resp = await deploy(gateway, payload)
    assert resp.status == 422, await resp.text()
    answer = await resp.json()
    assert answer["error"] == "invalid_request"
    assert answer["field"] == field
    assert answer["detail"].startswith(f"{field}:")
    assert await gateway.events.empty(0.1)
    assert (await gateway.client.get("/healthz")).status == 200
    assert (await deploy(gateway, GOOD)).status == 202  # still serving
    await gateway.events.get()


async def test_delete_app(gateway: Harness) -> None:
    headers = sign_headers(DEPLOY_SECRET, b"")
    resp = await gateway.client.delete("/apps/hello", headers=headers)
    assert resp.status == 202, await resp.text()
    answer = await resp.json()
    event = await gateway.events.get()
    assert event["type"] == "dev.relay.app.delete.requested"
    assert (event["app"], event["deploymentid"]) == ("hello", answer["deployment_id"])
    again = await gateway.client.delete("/apps/hello", headers=headers)
    assert again.status == 409


@pytest.mark.parametrize("name", ["Hello", "a.b", "x;y", "a" * 70, "-x"])
async def test_delete_bad_app_name(memory_gateway: Harness, name: str) -> None:
    resp = await memory_gateway.client.delete(
        f"/apps/{name}", headers=sign_headers(DEPLOY_SECRET, b"")
    )
    assert resp.status == 422
    assert (await resp.json())["field"] == "app"
    assert await memory_gateway.events.empty(0.05)


async def test_delete_signature_covers_the_empty_body(memory_gateway: Harness) -> None:
    headers = sign_headers(DEPLOY_SECRET, b"something")
    resp = await memory_gateway.client.delete("/apps/hello", headers=headers)
    assert resp.status == 401


async def test_deploy_rate_limit(tmp_path: Any) -> None:
    from tests.gateway.conftest import memory_harness

    extra = {"deploy": {"rate_limit": {"requests": 2, "per_seconds": 600}}}
    async with memory_harness(tmp_path, **extra) as harness:
        now = int(time.time())
        statuses = [(await deploy(harness, GOOD, timestamp=now - i)).status for i in range(3)]
        assert statuses == [202, 202, 429]


# Property tests on the request model.
label = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?\Z")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(app=label)
def test_valid_app_names_accepted(app: str) -> None:
    assert DeployRequest.model_validate({**GOOD, "app": app}).app == app


@settings(max_examples=300, deadline=None)
@given(app=st.text(max_size=80))
def test_app_names_are_dns_labels(app: str) -> None:
    import re

    valid = len(app) <= 40 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", app) is not None
    try:
        DeployRequest.model_validate({**GOOD, "app": app})
    except ValidationError:
        assert not valid
    else:
        assert valid


@settings(max_examples=300, deadline=None)
@given(name=st.text(min_size=1, max_size=40))
def test_file_names_stay_inside_the_context(name: str) -> None:
    payload = {"app": "a", "version": "v", "source": {"files": {name: ""}, "dockerfile": "FROM x"}}
    try:
        DeployRequest.model_validate(payload)
    except ValidationError:
        return
    parts = name.split("/")
    assert not name.startswith("/") and "\x00" not in name and "\\" not in name
    assert ".." not in parts and "." not in parts and "" not in parts


@settings(max_examples=200, deadline=None)
@given(extra=st.dictionaries(st.text(min_size=1, max_size=10), st.integers(), min_size=1))
def test_unknown_fields_refused(extra: dict[str, int]) -> None:
    known = set(DeployRequest.model_fields)
    payload = {**GOOD, **extra}
    if set(extra) <= known:
        return
    with pytest.raises(ValidationError):
        DeployRequest.model_validate(payload)


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(lambda sig: "sha256=" + sig.removeprefix("sha256=").upper(), id="upper-hex"),
        pytest.param(lambda sig: f"{sig} ", id="trailing-space"),
        pytest.param(lambda sig: sig.replace("sha256=", "SHA256="), id="upper-prefix"),
    ],
)
async def test_a_respelled_signature_is_still_a_replay(
    memory_gateway: Harness, variant: Any
) -> None:
    """Hex is case-blind and the header may be padded: the replay key is the digest itself."""
    now = int(time.time())
    body, headers = signed_json(GOOD, timestamp=now)
    first = await memory_gateway.client.post("/deploy", data=body, headers=headers)
    assert first.status == 202
    respelled = {**headers, "X-Relay-Signature": variant(headers["X-Relay-Signature"])}
    respelled["X-Relay-Timestamp"] = f"0{now}"  # the same second, written differently
    again = await memory_gateway.client.post("/deploy", data=body, headers=respelled)
    assert again.status == 409, await again.text()
    assert (await again.json())["error"] == "replayed_signature"
