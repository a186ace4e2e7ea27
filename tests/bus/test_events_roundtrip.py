"""Events to AMQP and back: exact round trips, and a decoder that only ever raises InvalidEvent."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.errors import InvalidEvent
from relay.events import CONTENT_TYPE, CloudEvent, decode, encode, new_event
from relay.events.data import (
    DeployFailed,
    EventData,
    FluxEvent,
    FluxObject,
    GitOther,
    GitPush,
    Repository,
)
from tests.bus.conftest import BusEnv
from tests.bus.helpers import Recorder, eventually

SAMPLES: list[tuple[EventData, str | None]] = [
    (
        GitPush(
            provider="github",
            receiver="apps",
            repository=Repository(full_name="acme/web", clone_url="https://git.example/acme/web"),
            ref="refs/heads/main",
            branch="main",
            before="0" * 40,
            after="a" * 40,
            commits=2,
            pusher="ana",
        ),
        None,
    ),
    (
        GitOther(provider="gitea", receiver="apps", event="issues", payload={"ü": [1, None]}),
        "git.issues",
    ),
    (
        DeployFailed(
            version="1.2.3",
            callback_url="https://ci.example/cb",
            requested_at=datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
            stages={"build": 12.5},
            stage="build",
            reason="build_failed",
            detail="step 3/7: exit code 1",
        ),
        None,
    ),
    (
        FluxEvent(
            receiver="flux",
            involved_object=FluxObject(kind="Kustomization", name="web", namespace="flux-system"),
            severity="info",
            reason="ReconciliationSucceeded",
            message="applied revision main@sha1:abc",
            metadata={"revision": "main@sha1:abc"},
        ),
        None,
    ),
]


def sample_events() -> list[CloudEvent]:
    return [
        new_event(
            data, source="/tests", routing_key=key, subject="web", deploymentid="d1", app="web"
        )
        for data, key in SAMPLES
    ]


@pytest.mark.parametrize("sent", sample_events(), ids=lambda e: e.routing_key)
def test_encode_decode_is_exact(sent: CloudEvent) -> None:
    body = encode(sent)
    back = decode(body, routing_key=sent.routing_key, message_id=sent.id)
    assert back == sent
    assert encode(back) == body


def test_the_amqp_properties_must_agree_with_the_body() -> None:
    sent = sample_events()[0]
    with pytest.raises(InvalidEvent, match="routing key"):
        decode(encode(sent), routing_key="git.tag")
    with pytest.raises(InvalidEvent, match="message_id"):
        decode(encode(sent), message_id="another")


async def test_events_cross_the_bus_with_their_amqp_properties(env: BusEnv) -> None:
    bus = await env.bus()
    seen = Recorder()
    await bus.consume(env.queue("all", "#"), seen)
    sent = sample_events()
    for one in sent:
        await bus.publish(one)
    await eventually(lambda: len(seen.seen) == len(sent))
    for one, got in zip(sent, (s.message for s in seen.seen), strict=True):
        assert (got.content_type, got.message_id, got.routing_key) == (
            CONTENT_TYPE,
            one.id,
            one.routing_key,
        )
        assert got.body == encode(one)
        assert decode(got.body, routing_key=got.routing_key, message_id=got.message_id) == one


def _decode_or_invalid(body: bytes) -> None:
    with contextlib.suppress(InvalidEvent):
        decode(body)


@given(st.binary(max_size=512))
def test_decode_raises_only_invalid_event_on_any_bytes(body: bytes) -> None:
    _decode_or_invalid(body)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(JSON)
def test_decode_raises_only_invalid_event_on_any_json(value: Any) -> None:
    _decode_or_invalid(json.dumps(value).encode())


ENVELOPE_FIELDS = ["specversion", "id", "source", "type", "subject", "time", "data", "app"]


@given(st.sampled_from(ENVELOPE_FIELDS), JSON, st.sampled_from(range(len(SAMPLES))))
def test_decode_raises_only_invalid_event_on_a_damaged_envelope(
    name: str, value: Any, which: int
) -> None:
    envelope = json.loads(encode(sample_events()[which]))
    envelope[name] = value
    _decode_or_invalid(json.dumps(envelope).encode())


@given(st.sampled_from(range(len(SAMPLES))), st.integers(min_value=0, max_value=400))
def test_decode_raises_only_invalid_event_on_a_truncated_body(which: int, cut: int) -> None:
    _decode_or_invalid(encode(sample_events()[which])[:cut])
