"""Hypothesis over every receiver type and the deploy API, against the live gateway (memory://).

Properties, each checked on every answer against the OpenAPI document (status documented, body
valid): a correctly signed body of any shape is never a 500 nor a 401, and publishes only when
answered 2xx; an unsigned, forged or wrongly signed one is a 401 (415 for a content type the
receiver does not take) and publishes nothing. For ``/deploy`` the request model itself is the
oracle: JSON objects the model accepts are 202 with one event, others 422, non-objects 400.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from pydantic import ValidationError

from relay.events.deploy import DeployRequest, check_app_name
from relay.signing import sign_headers, standard_headers
from tests.api import oracle
from tests.api.live import LiveGateway
from tests.api.strategies import (
    DELETE_NAMES,
    HEADER_TEXT,
    SIGNATURE_HEADERS,
    deploy_payloads,
    encode,
    fuzz_budget,
    hook_bodies,
)
from tests.gateway.conftest import DEPLOY_SECRET, SECRETS, TYPES, signed

FUZZ = fuzz_budget(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RECEIVERS = sorted(TYPES)
DOT_SEGMENTS = {".", ".."}  # /apps/. is /apps/ to any URL parser: 404
TOKEN_HEADERS = {"Authorization", "X-Gitlab-Token"}
DELIVERY_HEADERS = ["X-GitHub-Delivery", "Idempotency-Key", "X-Request-UUID", "X-Request-Id"]


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def _post_hook(
    live: LiveGateway, http: requests.Session, receiver: str, body: bytes, headers: dict[str, str]
) -> tuple[int, int]:
    """POST, check the answer against the document; (status, events published meanwhile)."""
    before = live.published
    answer = http.post(f"{live.url}/hook/{receiver}", data=body, headers=headers, timeout=30)
    oracle.check("POST", "/hook/{receiver}", answer.status_code, answer.headers, answer.content)
    return answer.status_code, live.published - before


@pytest.mark.parametrize("receiver", RECEIVERS)
@FUZZ
@given(data=st.data())
def test_signed_payload_of_any_shape_is_never_a_server_error(
    receiver: str, data: st.DataObject, live: LiveGateway, http: requests.Session
) -> None:
    body, content_type, event = data.draw(hook_bodies(receiver), label="body")
    headers = signed(receiver, body, event or None) | {"Content-Type": content_type}
    if data.draw(st.booleans(), label="delivery"):
        headers[data.draw(st.sampled_from(DELIVERY_HEADERS))] = data.draw(HEADER_TEXT)
    status, published = _post_hook(live, http, receiver, body, headers)
    assert status not in (401, 500)
    assert live.bus.invalid == []
    if status == 202:
        assert published >= 1
    elif status != 200:
        assert published == 0


def _forged(receiver: str, body: bytes, data: st.DataObject) -> dict[str, str]:
    kind = TYPES[receiver]
    way = data.draw(st.sampled_from(["unsigned", "garbage", "wrong-secret", "other-body"]))
    headers = signed(receiver, body)
    for name in SIGNATURE_HEADERS[kind]:
        headers.pop(name, None)
    if way == "unsigned":
        return headers
    name = data.draw(st.sampled_from(SIGNATURE_HEADERS[kind]), label="header")
    if way == "garbage":
        value = data.draw(HEADER_TEXT, label="value")
        if name == "webhook-signature":
            headers |= {"webhook-id": "msg", "webhook-timestamp": str(int(time.time()))}
        return headers | {name: value}
    if name in TOKEN_HEADERS:  # a token does not depend on the body: only a wrong one forges
        way = "wrong-secret"
    secret = "not-" + SECRETS[receiver][0] if way == "wrong-secret" else SECRETS[receiver][0]
    signed_body = body if way == "wrong-secret" else body + b" "
    if name == "webhook-signature":
        return headers | standard_headers(secret, "msg-1", signed_body)
    forged = signed(receiver, signed_body, secret=secret)
    return headers | {n: forged[n] for n in SIGNATURE_HEADERS[kind] if n in forged}


@pytest.mark.parametrize("receiver", RECEIVERS)
@FUZZ
@given(data=st.data())
def test_unsigned_or_forged_delivery_is_refused_and_publishes_nothing(
    receiver: str, data: st.DataObject, live: LiveGateway, http: requests.Session
) -> None:
    body, content_type, _ = data.draw(hook_bodies(receiver), label="body")
    headers = _forged(receiver, body, data) | {"Content-Type": content_type}
    wrong_type = data.draw(st.sampled_from([None] * 5 + ["text/plain", "", "application/xml"]))
    if wrong_type is not None:
        headers["Content-Type"] = wrong_type
    status, published = _post_hook(live, http, receiver, body, headers)
    assert status == (401 if wrong_type is None else 415)
    assert published == 0


def expected_deploy_status(body: bytes) -> int:
    try:
        payload = json.loads(body)
    except ValueError:
        return 400
    if not isinstance(payload, dict):
        return 400
    try:
        DeployRequest.model_validate(payload)
    except ValidationError:
        return 422
    try:  # a lone surrogate passes the model but no event can carry it
        json.dumps(payload, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return 400
    return 202


class Signatures:
    """Signatures the gateway accepted: sending one again must be refused as a replay (409);
    one whose request failed is released and may be sent again."""

    def __init__(self) -> None:
        self.accepted: set[str] = set()

    def headers(self, body: bytes, data: st.DataObject) -> tuple[dict[str, str], str]:
        if data.draw(st.booleans(), label="standard webhooks"):
            headers = standard_headers(DEPLOY_SECRET, f"msg_{uuid.uuid4().hex}", body)
            return headers, headers["webhook-signature"]
        stamp = int(time.time()) - data.draw(st.integers(0, 200), label="age")
        headers = sign_headers(DEPLOY_SECRET, body, stamp)
        return headers, headers["X-Relay-Signature"] + stamp_of(headers)

    def expect(self, key: str, otherwise: int) -> int:
        return 409 if key in self.accepted else otherwise

    def answered(self, key: str, status: int) -> None:
        if status in (200, 202):
            self.accepted.add(key)


def stamp_of(headers: dict[str, str]) -> str:
    return headers["X-Relay-Timestamp"]


@pytest.fixture(scope="module")
def signatures() -> Signatures:
    return Signatures()


def _send(
    live: LiveGateway, http: requests.Session, method: str, path: str, template: str, **kw: Any
) -> tuple[int, Any, int]:
    before = live.published
    answer = http.request(method, f"{live.url}{path}", timeout=30, **kw)
    found = oracle.check(method, template, answer.status_code, answer.headers, answer.content)
    return answer.status_code, found, live.published - before


@FUZZ
@given(data=st.data())
def test_signed_deploy_answers_what_the_model_decides(
    data: st.DataObject, live: LiveGateway, http: requests.Session, signatures: Signatures
) -> None:
    payload = data.draw(deploy_payloads(), label="payload")
    body = encode(payload, ascii_only=data.draw(st.booleans()))
    headers, key = signatures.headers(body, data)
    headers["Content-Type"] = "application/json"
    expected = signatures.expect(key, expected_deploy_status(body))
    status, answer, published = _send(
        live, http, "POST", "/deploy", "/deploy", data=body, headers=headers
    )
    signatures.answered(key, status)
    assert status == expected, answer
    assert published == (1 if status == 202 else 0)
    if status == 202:
        assert answer["app"] == payload["app"]
    if status == 422:
        assert answer["field"]


@FUZZ
@given(name=DELETE_NAMES.filter(lambda n: n not in DOT_SEGMENTS), data=st.data())
def test_signed_app_delete_checks_the_name(
    name: str,
    data: st.DataObject,
    live: LiveGateway,
    http: requests.Session,
    signatures: Signatures,
) -> None:
    headers, key = signatures.headers(b"", data)
    try:
        expected = signatures.expect(key, 202 if check_app_name(name) else 422)
    except ValueError:
        expected = signatures.expect(key, 422)
    if "{" in name or "}" in name:  # aiohttp matches no route for a segment with braces
        expected = 404
    path = "/apps/" + urllib.parse.quote(name, safe="")
    status, _, published = _send(live, http, "DELETE", path, "/apps/{app}", headers=headers)
    signatures.answered(key, status)
    assert status == expected, f"app name {name!r}"
    assert published == (1 if status == 202 else 0)


@FUZZ
@given(payload=deploy_payloads(), data=st.data())
def test_unsigned_or_forged_deploy_is_refused_and_publishes_nothing(
    payload: Any, data: st.DataObject, live: LiveGateway, http: requests.Session
) -> None:
    body = encode(payload)
    now = int(time.time())
    way = data.draw(st.sampled_from(["unsigned", "garbage", "wrong-secret", "stale", "other-body"]))
    headers = {
        "unsigned": {},
        "garbage": {"X-Relay-Timestamp": str(now), "X-Relay-Signature": data.draw(HEADER_TEXT)},
        "wrong-secret": sign_headers("not-the-deploy-secret", body, now),
        "stale": sign_headers(DEPLOY_SECRET, body, now - 301 - data.draw(st.integers(0, 10**6))),
        "other-body": sign_headers(DEPLOY_SECRET, body + b" ", now),
    }[way] | {"Content-Type": "application/json"}
    status, answer, published = _send(
        live, http, "POST", "/deploy", "/deploy", data=body, headers=headers
    )
    assert status == 401, answer
    assert published == 0
