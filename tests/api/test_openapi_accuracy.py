"""docs/openapi.yaml is valid and says what the gateway does.

- the document validates as OpenAPI 3.1, and its deploy request schemas are the model's own;
- every route ``create_app`` serves is documented, and every documented operation is served;
- for every operation, each documented status is provoked on the real gateway (memory://) and
  its answer checked against the document (status documented, headers, JSON body schema); an
  operation's test fails if a documented status could not be provoked, so none is left stale.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from openapi_spec_validator import validate

from relay.bus.memory import MemoryBus
from relay.gateway.app import create_app
from relay.settings import Settings
from relay.signing import sign_headers, standard_headers
from tests.api import openapi_doc, oracle
from tests.api.live import LiveGateway, fuzz_settings
from tests.gateway.conftest import DEPLOY_SECRET, FIXTURES, SECRETS, signed

PUSH = (FIXTURES / "github/push.json").read_bytes()
PING = (FIXTURES / "github/ping.json").read_bytes()
DEPLOY = {"app": "hello", "version": "v1", "image": "127.0.0.1:5000/hello:v1"}
MAX_BODY = 64 * 1024
ONE_PER_HOUR = {"requests": 1, "per_seconds": 3600}


def documented_statuses(method: str, template: str) -> set[int]:
    return {int(s) for s in oracle.operation(method, template)["responses"]}


class Calls:
    """Requests to one gateway, each answer checked against the document and its status kept."""

    def __init__(self, live: LiveGateway) -> None:
        self.live = live
        self.http = requests.Session()
        self.seen: dict[tuple[str, str], set[int]] = {}

    def __call__(self, method: str, template: str, path: str, **kw: Any) -> requests.Response:
        answer = self.http.request(method, self.live.url + path, timeout=30, **kw)
        oracle.check(method, template, answer.status_code, answer.headers, answer.content)
        self.seen.setdefault((method, template), set()).add(answer.status_code)
        return answer

    def raw(self, method: str, template: str, wire: bytes) -> int:
        """Send bytes as they are (a body cut short, an oversized Content-Length)."""
        port = int(self.live.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(wire)
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.split(": ", 1) for line in lines[1:])
        oracle.check(method, template, status, headers, body)
        self.seen.setdefault((method, template), set()).add(status)
        return status


def merge(*parts: Calls) -> dict[tuple[str, str], set[int]]:
    seen: dict[tuple[str, str], set[int]] = {}
    for calls in parts:
        for key, statuses in calls.seen.items():
            seen.setdefault(key, set()).update(statuses)
    return seen


_AGES = itertools.count()


def fresh(body: bytes) -> dict[str, str]:
    """Signature headers never sent before: each call signs with an older timestamp."""
    return sign_headers(DEPLOY_SECRET, body, int(time.time()) - next(_AGES) % 250)


def deploy_headers(body: bytes, **more: str) -> dict[str, str]:
    return fresh(body) | {"Content-Type": "application/json"} | more


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LiveGateway]]:
    """``main``: small limits to provoke 408/413, a branch filter; ``limited``: one request an
    hour; ``disabled``: no deploy secret."""
    tmp = tmp_path_factory.mktemp("accuracy")
    (tmp / "filtered.secret").write_text(SECRETS["gh"][0])
    filtered = {"name": "main-only", "type": "github", "secret_file": str(tmp / "filtered.secret")}
    main = fuzz_settings(
        tmp,
        http={"read_timeout": 1.0, "max_body_bytes": MAX_BODY},
        receivers=[filtered | {"branches": ["main"]}],
    )
    limited = fuzz_settings(
        tmp_path_factory.mktemp("limited"),
        http={"rate_limit": ONE_PER_HOUR},
        deploy={"rate_limit": ONE_PER_HOUR},
    )
    disabled = Settings(broker={"url": "memory://"})
    with (
        LiveGateway(main, name="accuracy") as a,
        LiveGateway(limited, name="accuracy-limited") as b,
        LiveGateway(disabled, name="accuracy-disabled") as c,
    ):
        yield {"main": a, "limited": b, "disabled": c}


def test_document_is_valid_openapi() -> None:
    validate(openapi_doc.load())


def test_deploy_request_schemas_are_the_models() -> None:
    schemas = openapi_doc.load()["components"]["schemas"]
    for name, schema in openapi_doc.model_schemas().items():
        assert schemas.get(name) == schema, f"{name} differs: run python -m tests.api.openapi_doc"


def test_every_route_is_documented_and_every_operation_served() -> None:
    app = create_app(settings=Settings(broker={"url": "memory://"}), bus=MemoryBus())
    served = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD"  # aiohttp adds HEAD to every GET
    }
    documented = {
        (method, path)
        for path, item in openapi_doc.load()["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    }
    assert served == documented


def test_hook_statuses(gateways: dict[str, LiveGateway]) -> None:
    calls, limited = Calls(gateways["main"]), Calls(gateways["limited"])
    route = ("POST", "/hook/{receiver}")
    delivery = {"X-GitHub-Delivery": str(uuid.uuid4())}
    assert (
        calls(*route, "/hook/gh", data=PUSH, headers=signed("gh", PUSH, **delivery)).status_code
        == 202
    )
    assert calls(*route, "/hook/gh", data=PUSH, headers=signed("gh", PUSH, **delivery)).json()[
        "duplicate"
    ]
    assert calls(*route, "/hook/gh", data=PING, headers=signed("gh", PING, "ping")).json()["ping"]
    assert (
        "ignored" in calls(*route, "/hook/main-only", data=PUSH, headers=signed("gh", PUSH)).json()
    )
    assert calls(*route, "/hook/gh", data=b"[1", headers=signed("gh", b"[1")).status_code == 400
    assert (
        calls(
            *route, "/hook/gh", data=PUSH, headers={"Content-Type": "application/json"}
        ).status_code
        == 401
    )
    assert calls(*route, "/hook/nobody", data=PUSH, headers=signed("gh", PUSH)).status_code == 404
    assert (
        calls(*route, "/hook/gh", data=PUSH, headers={"Content-Type": "text/plain"}).status_code
        == 415
    )
    big = b" " * MAX_BODY + PUSH
    assert calls(*route, "/hook/gh", data=big, headers=signed("gh", big)).status_code == 413
    cut_short = b"POST /hook/gh HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    assert calls.raw(*route, cut_short + b"Content-Length: 100\r\n\r\n{") == 408
    for _ in range(2):
        limited(*route, "/hook/gh", data=PUSH, headers=signed("gh", PUSH))
    assert 429 in limited.seen[route]
    assert_all_provoked(route, calls, limited, outage(gateways, route))


def test_deploy_statuses(gateways: dict[str, LiveGateway]) -> None:
    calls, limited, disabled = (Calls(gateways[k]) for k in ("main", "limited", "disabled"))
    route = ("POST", "/deploy")
    body = json.dumps(DEPLOY).encode()
    headers = deploy_headers(body, **{"Idempotency-Key": str(uuid.uuid4())})
    assert calls(*route, "/deploy", data=body, headers=headers).status_code == 202
    assert calls(*route, "/deploy", data=body, headers=headers).status_code == 409
    again = deploy_headers(body, **{"Idempotency-Key": headers["Idempotency-Key"]})
    assert calls(*route, "/deploy", data=body, headers=again).json()["duplicate"] is True
    assert calls(*route, "/deploy", data=b"{", headers=deploy_headers(b"{")).status_code == 400
    bad = json.dumps({**DEPLOY, "app": "Not_A_Label"}).encode()
    assert calls(*route, "/deploy", data=bad, headers=deploy_headers(bad)).json()["field"] == "app"
    assert (
        calls(
            *route, "/deploy", data=body, headers={"Content-Type": "application/json"}
        ).status_code
        == 401
    )
    assert (
        calls(*route, "/deploy", data=body, headers={"Content-Type": "text/plain"}).status_code
        == 415
    )
    big = b" " * MAX_BODY + body
    assert calls(*route, "/deploy", data=big, headers=deploy_headers(big)).status_code == 413
    cut_short = b"POST /deploy HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    assert calls.raw(*route, cut_short + b"Content-Length: 100\r\n\r\n{") == 408
    assert disabled(*route, "/deploy", data=body, headers=deploy_headers(body)).status_code == 404
    for _ in range(2):
        limited(*route, "/deploy", data=body, headers=deploy_headers(body))
    assert 429 in limited.seen[route]
    assert_all_provoked(route, calls, limited, disabled, outage(gateways, route))


def test_app_delete_statuses(gateways: dict[str, LiveGateway]) -> None:
    calls, limited, disabled = (Calls(gateways[k]) for k in ("main", "limited", "disabled"))
    route = ("DELETE", "/apps/{app}")
    key = {"Idempotency-Key": str(uuid.uuid4())}
    signed_empty = fresh(b"") | key
    assert calls(*route, "/apps/hello", headers=signed_empty).status_code == 202
    assert calls(*route, "/apps/hello", headers=signed_empty).status_code == 409
    webhook = standard_headers(DEPLOY_SECRET, "msg-" + key["Idempotency-Key"], b"") | key
    assert calls(*route, "/apps/hello", headers=webhook).json()["duplicate"] is True
    assert calls(*route, "/apps/Bad_Name", headers=fresh(b"")).status_code == 422
    assert calls(*route, "/apps/hello").status_code == 401
    big = b" " * (MAX_BODY + 1)
    assert calls(*route, "/apps/hello", data=big, headers=fresh(big)).status_code == 413
    assert (
        calls.raw(*route, b"DELETE /apps/hello HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        == 408
    )
    assert disabled(*route, "/apps/hello", headers=fresh(b"")).status_code == 404
    for _ in range(2):
        limited(*route, "/apps/hello", headers=fresh(b""))
    assert 429 in limited.seen[route]
    assert_all_provoked(route, calls, limited, disabled, outage(gateways, route))


def test_status_routes(gateways: dict[str, LiveGateway]) -> None:
    live = gateways["main"]
    calls = Calls(live)
    body = json.dumps({**DEPLOY, "app": "followed"}).encode()
    started = calls("POST", "/deploy", "/deploy", data=body, headers=deploy_headers(body)).json()
    ident = started["deployment_id"]
    live.fail_deployment(ident)
    listed = calls("GET", "/deployments", "/deployments", params={"app": "followed"}).json()
    assert [d["deployment_id"] for d in listed["deployments"]] == [ident]
    assert calls("GET", "/deployments", "/deployments", params={"limit": "x"}).status_code == 400
    assert (
        calls("GET", "/deployments", "/deployments", params={"status": "lost"}).status_code == 400
    )
    assert calls("GET", "/deployments/{id}", f"/deployments/{ident}").json()["status"] == "failed"
    assert calls("GET", "/deployments/{id}", "/deployments/nothing").status_code == 404
    stream = calls("GET", "/deployments/{id}/events", f"/deployments/{ident}/events")
    assert "event: deploy.requested" in stream.text and "event: deploy.failed" in stream.text
    assert (
        calls("GET", "/deployments/{id}/events", "/deployments/nothing/events").status_code == 404
    )
    for route in (
        ("GET", "/deployments"),
        ("GET", "/deployments/{id}"),
        ("GET", "/deployments/{id}/events"),
    ):
        assert_all_provoked(route, calls)


def test_operations_routes(gateways: dict[str, LiveGateway]) -> None:
    calls = Calls(gateways["main"])
    assert calls("GET", "/healthz", "/healthz").json() == {"status": "ok"}
    assert calls("GET", "/readyz", "/readyz").json() == {"ready": True}
    assert "relay_gateway_requests" in calls("GET", "/metrics", "/metrics").text
    outage(gateways, ("GET", "/readyz"))  # 503 there
    assert_all_provoked(("GET", "/healthz"), calls)
    assert_all_provoked(("GET", "/metrics"), calls)


def outage(gateways: dict[str, LiveGateway], route: tuple[str, str]) -> Calls:
    """The same requests while the bus is disconnected: 503 (with Retry-After where documented)."""
    live = gateways["main"]
    calls = Calls(live)
    live.run(live.bus.close())
    try:
        if route == ("GET", "/readyz"):
            assert calls(*route, "/readyz").json() == {"ready": False}
        elif route == ("POST", "/hook/{receiver}"):
            assert (
                calls(*route, "/hook/gh", data=PUSH, headers=signed("gh", PUSH)).status_code == 503
            )
        elif route == ("POST", "/deploy"):
            body = json.dumps(DEPLOY).encode()
            assert (
                calls(*route, "/deploy", data=body, headers=deploy_headers(body)).status_code == 503
            )
        else:
            headers = fresh(b"")
            assert calls(*route, "/apps/hello", headers=headers).status_code == 503
    finally:
        live.run(live.bus.start())
    assert calls("GET", "/readyz", "/readyz").json() == {"ready": True}
    return calls


def assert_all_provoked(route: tuple[str, str], *parts: Calls) -> None:
    seen = merge(*parts).get(route, set())
    assert seen == documented_statuses(*route), f"{route}: documented vs provoked"
