"""Inputs the fuzzing found to crash the gateway (500), pinned: each is now a 4xx or a 2xx,
documented, and publishes nothing unless accepted.

Header values go over a raw socket: HTTP clients refuse bytes that are not ASCII, senders do not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
import uuid
from typing import Any

import pytest
import requests

from relay.events.data import GitPing
from relay.gateway.hooks import EVENT_NAMESPACE, event_id
from relay.receivers import ParsedEvent, Receiver
from relay.signing import sign_headers
from tests.api import oracle
from tests.api.live import LiveGateway
from tests.gateway.conftest import DEPLOY_SECRET, FIXTURES, SECRETS

PUSH = (FIXTURES / "github/push.json").read_bytes()
JSON_TYPE = (b"Content-Type", b"application/json")
DEPLOY = b'{"app": "hello", "version": "v1", "image": "127.0.0.1:5000/hello:v1"}'


def _hub(body: bytes, secret: str = SECRETS["gh"][0]) -> bytes:
    return b"sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()


def send_raw(
    live: LiveGateway, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request with header bytes exactly as given; (status, headers, body)."""
    port = int(live.url.rsplit(":", 1)[1])
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    head += f"Content-Length: {len(body)}\r\n"
    wire = head.encode() + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(wire + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head_bytes, _, payload = answer.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), fields, payload


def _check(
    live: LiveGateway,
    method: str,
    template: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> tuple[int, Any, int]:
    before = live.published
    status, fields, payload = send_raw(live, method, path, headers, body)
    decoded = oracle.check(method, template, status, fields, payload)
    return status, decoded, live.published - before


UNSIGNED_HEADER_BYTES = {
    "bearer token not UTF-8": ("/hook/any", [(b"Authorization", b"Bearer \xff\xfe")]),
    "hub signature not hex": ("/hook/gh", [(b"X-Hub-Signature-256", b"sha256=" + b"\xff" * 64)]),
    "gitea signature not hex": ("/hook/gt", [(b"X-Gitea-Signature", b"\xff" * 64)]),
    "gitlab token not UTF-8": ("/hook/gl", [(b"X-Gitlab-Token", b"\xff")]),
    "standard webhooks id not UTF-8": (
        "/hook/gl",
        [
            (b"webhook-id", b"\xff"),
            (b"webhook-timestamp", str(int(time.time())).encode()),
            (b"webhook-signature", b"v1,abc"),
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(UNSIGNED_HEADER_BYTES))
def test_signature_headers_that_are_not_ascii_are_401(live: LiveGateway, case: str) -> None:
    path, headers = UNSIGNED_HEADER_BYTES[case]
    status, answer, published = _check(
        live, "POST", "/hook/{receiver}", path, [JSON_TYPE, *headers], PUSH
    )
    assert status == 401, answer
    assert published == 0


@pytest.mark.parametrize(
    "headers",
    [
        [(b"X-Relay-Timestamp", b"NOW"), (b"X-Relay-Signature", b"sha256=" + b"\xff" * 64)],
        [(b"webhook-id", b"\xff"), (b"webhook-timestamp", b"NOW"), (b"webhook-signature", b"v1,x")],
        [
            (b"X-Relay-Timestamp", "\u0661\u0667".encode() + b"00000000"),
            (b"X-Relay-Signature", b"sha256=00"),
        ],
        [(b"X-Relay-Timestamp", b"1_700_000_000"), (b"X-Relay-Signature", b"sha256=00")],
    ],
    ids=["signature-not-hex", "webhook-id-not-utf8", "arabic-digits", "underscores"],
)
def test_deploy_signature_headers_that_are_not_ascii_are_401(
    live: LiveGateway, headers: list[tuple[bytes, bytes]]
) -> None:
    now = str(int(time.time())).encode()
    headers = [(k, v.replace(b"NOW", now)) for k, v in headers]
    status, answer, published = _check(
        live, "POST", "/deploy", "/deploy", [JSON_TYPE, *headers], DEPLOY
    )
    assert status == 401, answer
    assert published == 0


def test_delivery_id_that_is_not_utf8_is_accepted_once(live: LiveGateway) -> None:
    headers = [JSON_TYPE, (b"X-Hub-Signature-256", _hub(PUSH)), (b"X-GitHub-Event", b"push")]
    headers.append((b"X-GitHub-Delivery", b"delivery-\xff-" + uuid.uuid4().hex.encode()))
    status, answer, published = _check(live, "POST", "/hook/{receiver}", "/hook/gh", headers, PUSH)
    assert (status, published) == (202, 1), answer
    status, again, published = _check(live, "POST", "/hook/{receiver}", "/hook/gh", headers, PUSH)
    assert (status, published, again["event_id"]) == (200, 0, answer["event_id"])


def test_event_ids_are_still_uuid5_of_the_delivery() -> None:
    """Redeliveries across versions keep their ids: the bytes-based uuid5 equals uuid.uuid5."""
    receiver = Receiver(name="gh", type="github", secrets=("x",))
    data = GitPing(provider="github", receiver="gh")
    parsed = ParsedEvent(routing_key="git.ping", data=data, event="ping", dedupe_key="d-é-1")
    assert event_id(receiver, parsed) == str(uuid.uuid5(EVENT_NAMESPACE, "gh\nd-é-1"))


SIGNED_BODIES = {
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "nesting the event serialiser refuses": b'{"a": ' + b"[" * 300 + b"]" * 300 + b"}",
    "integer of 5000 digits": b'{"n": ' + b"9" * 5000 + b"}",
    "lone surrogate escape": b'{"ref": "refs/heads/\\ud800", "zen": "\\udfff"}',
    "lone surrogate as UTF-8 bytes": b'{"action": "\xed\xa0\x80"}',
    "ref not a string": json.dumps({**json.loads(PUSH), "ref": 1.0}).encode(),
    "before a list": json.dumps({**json.loads(PUSH), "before": []}).encode(),
}


@pytest.mark.parametrize("case", sorted(SIGNED_BODIES))
def test_signed_hostile_github_body_is_400(live: LiveGateway, case: str) -> None:
    body = SIGNED_BODIES[case]
    event = (
        b"push" if b'"ref"' in body or b'"before"' in body or b"clone_url" in body else b"issues"
    )
    headers = [JSON_TYPE, (b"X-Hub-Signature-256", _hub(body)), (b"X-GitHub-Event", event)]
    status, answer, published = _check(live, "POST", "/hook/{receiver}", "/hook/gh", headers, body)
    assert status == 400, answer
    assert answer["error"] == "malformed_payload"
    assert published == 0


def test_optional_field_of_the_wrong_type_is_left_out(live: LiveGateway) -> None:
    body = json.dumps({**json.loads(PUSH), "repository": {"full_name": "a/b", "clone_url": 7}})
    headers = [
        JSON_TYPE,
        (b"X-Hub-Signature-256", _hub(body.encode())),
        (b"X-GitHub-Event", b"push"),
    ]
    status, answer, published = _check(
        live, "POST", "/hook/{receiver}", "/hook/gh", headers, body.encode()
    )
    assert (status, published) == (202, 1), answer
    assert live.bus.invalid == []


@pytest.mark.parametrize(
    ("receiver", "headers"),
    [
        ("gl", [(b"X-Gitlab-Event", b"Push Hook")]),
        ("any", [(b"X-Event", b"push")]),
        ("gh2", [(b"X-Event", b"tag")]),
    ],
)
def test_push_event_without_push_fields_is_400(
    live: LiveGateway, receiver: str, headers: list[tuple[bytes, bytes]]
) -> None:
    """Not a ``git.push`` with data of another shape, which every consumer would refuse."""
    body = b'{"object_kind": "note", "zen": "hello"}'
    secret = SECRETS[receiver][0]
    sign = {
        "gl": (b"X-Gitlab-Token", secret.encode()),
        "any": (b"Authorization", b"Bearer " + secret.encode()),
        "gh2": (b"X-Signature", _hub(body, secret)),
    }[receiver]
    status, answer, published = _check(
        live, "POST", "/hook/{receiver}", f"/hook/{receiver}", [JSON_TYPE, sign, *headers], body
    )
    assert (status, published) == (400, 0), answer


def test_generic_ping_is_a_ping(live: LiveGateway) -> None:
    body = b'{"zen": "hello"}'
    headers = [JSON_TYPE, (b"X-Signature", _hub(body, SECRETS["gh2"][0])), (b"X-Event", b"ping")]
    status, answer, published = _check(live, "POST", "/hook/{receiver}", "/hook/gh2", headers, body)
    assert (status, answer["ping"], published) == (200, True, 1)
    assert live.bus.invalid == []


def test_event_header_that_is_not_utf8_is_400(live: LiveGateway) -> None:
    headers = [JSON_TYPE, (b"X-Hub-Signature-256", _hub(PUSH)), (b"X-GitHub-Event", b"iss\xffues")]
    status, answer, published = _check(live, "POST", "/hook/{receiver}", "/hook/gh", headers, PUSH)
    assert (status, published) == (400, 0), answer


@pytest.mark.parametrize(
    ("receiver", "event", "body"),
    [
        ("gl", b"Push Hook", b'{"object_kind": {"a": 1}}'),
        (
            "gl",
            b"Push Hook",
            b'{"object_kind": "push", "ref": ["x"], "before": "a", "after": "b", "project": {"path_with_namespace": "a/b"}}',
        ),
        (
            "bb",
            b"repo:push",
            b'{"push": {"changes": [1, "x"]}, "repository": {"full_name": "a/b"}}',
        ),
        (
            "bbs",
            b"repo:refs_changed",
            b'{"repository": {"slug": "r", "project": {"key": "P"}, "links": {"clone": 5}}, "changes": [{"refId": 5}]}',
        ),
        (
            "reg",
            b"",
            b'{"events": [{"id": "1", "action": "push", "target": {"tag": "v1", "repository": "r", "digest": "sha256:00"}, "source": {"addr": 7}}]}',
        ),
    ],
    ids=[
        "gitlab-kind-object",
        "gitlab-ref-list",
        "bitbucket-change-not-object",
        "bitbucket-server-ref-number",
        "registry-source-number",
    ],
)
def test_signed_fields_of_the_wrong_type_are_400(
    live: LiveGateway, receiver: str, event: bytes, body: bytes
) -> None:
    secret = SECRETS[receiver][0].encode()
    headers = {
        "gl": [(b"X-Gitlab-Token", secret), (b"X-Gitlab-Event", event)],
        "bb": [(b"X-Hub-Signature", _hub(body, secret.decode())), (b"X-Event-Key", event)],
        "bbs": [(b"X-Hub-Signature", _hub(body, secret.decode())), (b"X-Event-Key", event)],
        "reg": [(b"Authorization", b"Bearer " + secret)],
    }[receiver]
    status, answer, published = _check(
        live, "POST", "/hook/{receiver}", f"/hook/{receiver}", [JSON_TYPE, *headers], body
    )
    assert (status, published) == (400, 0), answer


def test_form_body_with_too_many_fields_is_400(live: LiveGateway) -> None:
    body = b"&".join(b"f%d=1" % i for i in range(100)) + b"&payload=%7B%7D"
    form = (b"Content-Type", b"application/x-www-form-urlencoded")
    headers = [form, (b"X-Hub-Signature-256", _hub(body)), (b"X-GitHub-Event", b"issues")]
    status, answer, published = _check(live, "POST", "/hook/{receiver}", "/hook/gh", headers, body)
    assert (status, published) == (400, 0), answer


def test_signed_deploy_with_a_lone_surrogate_is_400(live: LiveGateway) -> None:
    body = b'{"app": "hello", "version": "v1", "image": "r/hello:v1", "env": {"A": "\\ud800"}}'
    headers = [
        JSON_TYPE,
        *((k.encode(), v.encode()) for k, v in sign_headers(DEPLOY_SECRET, body).items()),
    ]
    status, answer, published = _check(live, "POST", "/deploy", "/deploy", headers, body)
    assert (status, published) == (400, 0), answer


@pytest.mark.parametrize("value", ["\u0661\u0662", " 5", "1_0", "9" * 4001, "5.0", ""])
def test_deployment_list_takes_ascii_whole_numbers_only(live: LiveGateway, value: str) -> None:
    """int() accepted other scripts' digits, spaces and underscores where the document says
    integer; they are now 400 like any other non-number."""
    answer = requests.get(f"{live.url}/deployments", params={"limit": value}, timeout=10)
    oracle.check("GET", "/deployments", answer.status_code, answer.headers, answer.content)
    assert answer.status_code == 400


def test_deployment_list_clamps_whole_numbers(live: LiveGateway) -> None:
    params = {"limit": "-3", "offset": "-1"}
    answer = requests.get(f"{live.url}/deployments", params=params, timeout=10)
    assert (answer.json()["limit"], answer.json()["offset"]) == (1, 0)


@pytest.mark.parametrize(
    "field", ["app", "version", "image", "health_path", "env"], ids=lambda f: f"{f}-newline"
)
def test_deploy_fields_with_a_trailing_newline_are_422(live: LiveGateway, field: str) -> None:
    """Python's "$" matches before a final newline: 'hello\\n' passed as an app name."""
    payload: dict[str, object] = {**json.loads(DEPLOY), "health_path": "/healthz"}
    payload[field] = {"A\n": "x"} if field == "env" else f"{payload[field]}\n"
    body = json.dumps(payload).encode()
    headers = [
        JSON_TYPE,
        *((k.encode(), v.encode()) for k, v in sign_headers(DEPLOY_SECRET, body).items()),
    ]
    status, answer, published = _check(live, "POST", "/deploy", "/deploy", headers, body)
    assert (status, answer["field"], published) == (422, field, 0)


def test_app_delete_with_a_trailing_newline_is_422(live: LiveGateway) -> None:
    headers = [(k.encode(), v.encode()) for k, v in sign_headers(DEPLOY_SECRET, b"").items()]
    status, answer, published = _check(
        live, "DELETE", "/apps/{app}", "/apps/hello%0A", headers, b""
    )
    assert (status, published) == (422, 0), answer
