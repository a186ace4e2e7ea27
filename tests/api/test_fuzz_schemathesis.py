"""Schemathesis against docs/openapi.yaml and the live gateway (memory://).

Two runs over the document: every operation with whatever schemathesis generates (signatures
are random, so nothing may be accepted or published), and the three publishing operations with
every generated request signed for real at the transport (so the fuzzing reaches the payload
parsers and the deploy model). Each answer goes through schemathesis' checks (no 5xx, status and
headers documented, body valid against its schema, invalid data rejected, unsupported methods
answered 405) and through ours: no publish without a 2xx; a signed request is never a 401.
Bounded: ``RELAY_FUZZ_EXAMPLES`` examples per operation (default 40) and a deadline per example.
"""

from __future__ import annotations

import itertools
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from relay.gateway import status
from relay.receivers import PROVIDERS
from relay.signing import sign_headers
from tests.api import openapi_doc
from tests.api.live import LiveGateway, fuzz_settings
from tests.api.strategies import SIGNATURE_HEADERS, fuzz_budget
from tests.gateway.conftest import DEPLOY_SECRET, TYPES, signed

FUZZ = fuzz_budget(suppress_health_check=list(HealthCheck))
RECEIVERS = sorted(TYPES)
PUBLISHING = {("POST", "/hook/{receiver}"), ("POST", "/deploy"), ("DELETE", "/apps/{app}")}
AGES = itertools.count()
KNOWN_DEPLOYMENTS: list[str] = []  # finished deployments, filled by the fixture

SCHEMA = schemathesis.openapi.from_dict(openapi_doc.load())
SIGNED = schemathesis.openapi.from_dict(openapi_doc.load()).include(
    path_regex="^/(hook|deploy|apps)"
)


def _pick(value: Any, choices: list[str], *, spare: int) -> Any:
    """Mostly one of ``choices`` (chosen by the generated value), sometimes the value itself."""
    index = zlib.crc32(str(value).encode("utf-8", "surrogatepass")) % (len(choices) + spare)
    return choices[index] if index < len(choices) else value


@SCHEMA.hook
def map_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
    if path_parameters is None:
        return None
    if "receiver" in path_parameters:
        path_parameters["receiver"] = _pick(path_parameters["receiver"], RECEIVERS, spare=2)
    if "id" in path_parameters and KNOWN_DEPLOYMENTS:
        path_parameters["id"] = _pick(path_parameters["id"], KNOWN_DEPLOYMENTS, spare=1)
    return path_parameters


@SIGNED.hook("map_path_parameters")
def signed_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
    if path_parameters is not None and "receiver" in path_parameters:
        path_parameters["receiver"] = _pick(path_parameters["receiver"], RECEIVERS, spare=0)
    return path_parameters


def _unknowable(case: Any, answer: requests.Response) -> list[Any]:
    """Checks the document cannot inform: which media types a receiver takes depends on its
    type (a path parameter), so a 415 for one it does not take is right, not a rejection of
    valid data. That 415 is asserted here instead."""
    receiver = str((case.path_parameters or {}).get("receiver", ""))
    if answer.status_code != 415 or receiver not in TYPES:
        return []
    assert case.media_type not in PROVIDERS[TYPES[receiver]].content_types
    return [positive_data_acceptance]


class Signer(requests.auth.AuthBase):
    """Signs the request as prepared (the exact body bytes) for a receiver or for the deploy API."""

    def __init__(self, receiver: str | None) -> None:
        """``receiver``: sign for that receiver; None: sign as a deploy client."""
        self.receiver = receiver

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        raw = request.body or b""
        body = raw.encode() if isinstance(raw, str) else raw
        assert isinstance(body, bytes), f"cannot sign a streamed body: {type(body).__name__}"
        if self.receiver is None:
            age = next(AGES) % 250  # each request its own timestamp: never a replayed signature
            request.headers.update(sign_headers(DEPLOY_SECRET, body, int(time.time()) - age))
            return request
        kind = TYPES.get(self.receiver)
        if kind is None:  # not a receiver (negative generation): it stays unsigned, 404
            return request
        headers = signed(self.receiver, body)
        for name in SIGNATURE_HEADERS[kind]:
            if name in headers:
                request.headers[name] = headers[name]
            else:
                request.headers.pop(name, None)
        return request


@pytest.fixture(scope="module")
def fuzz_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    settings = fuzz_settings(tmp_path_factory.mktemp("schemathesis"))
    # An unknown deployment id is answered 404 after a grace of 2 s (another replica may have
    # just accepted it): test_openapi_accuracy keeps it; here it would cost hundreds of seconds.
    with pytest.MonkeyPatch.context() as patch, LiveGateway(settings, name="schemathesis") as live:
        patch.setattr(status, "UNKNOWN_GRACE_SECONDS", 0.0)
        for app in ("fuzz-a", "fuzz-b"):
            body = f'{{"app": "{app}", "version": "v1", "image": "r/{app}:v1"}}'.encode()
            headers = sign_headers(DEPLOY_SECRET, body) | {"Content-Type": "application/json"}
            answer = requests.post(f"{live.url}/deploy", data=body, headers=headers, timeout=10)
            assert answer.status_code == 202
            KNOWN_DEPLOYMENTS.append(answer.json()["deployment_id"])
            live.fail_deployment(KNOWN_DEPLOYMENTS[-1])
        yield live
    KNOWN_DEPLOYMENTS.clear()


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


@SCHEMA.parametrize()
@FUZZ
def test_unsigned_requests(case: Any, fuzz_live: LiveGateway, session: requests.Session) -> None:
    before = fuzz_live.published
    answer = case.call(base_url=fuzz_live.url, session=session)
    case.validate_response(answer, excluded_checks=_unknowable(case, answer))
    if (case.method, case.path) in PUBLISHING:
        assert answer.status_code not in (200, 202)
    assert fuzz_live.published == before, "an unsigned request published an event"


@SIGNED.parametrize()
@FUZZ
def test_signed_requests(case: Any, fuzz_live: LiveGateway, session: requests.Session) -> None:
    receiver = str((case.path_parameters or {}).get("receiver", "")) or None
    before = fuzz_live.published
    answer = case.call(base_url=fuzz_live.url, session=session, auth=Signer(receiver))
    # the property tests judge acceptance with the deploy model itself; ignored_auth would
    # re-send without our signer, positive_data_acceptance expect every schema-valid body to pass
    case.validate_response(answer, excluded_checks=[ignored_auth, positive_data_acceptance])
    assert answer.status_code != 401, answer.text
    assert fuzz_live.bus.invalid == []
    if answer.status_code not in (200, 202):
        assert fuzz_live.published == before, answer.status_code
