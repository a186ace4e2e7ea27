"""Signatures: the published vectors, every provider's refusals, rotation, property tests."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.receivers import PROVIDERS
from relay.signing import (
    SignatureError,
    sign_headers,
    standard_headers,
    verify_prefixed,
    verify_relay,
    verify_standard,
)
from tests.gateway.conftest import FIXTURES, SECRETS, TYPES, VECTORS, Harness, hex_hmac, signed

SCHEME_PROVIDER = {
    "github-hmac-sha256": "github",
    "github-hmac-sha1-legacy": "github",
    "gitea-hmac-sha256": "gitea",
    "bitbucket-hmac-sha256": "bitbucket-server",
    "gitlab-token": "gitlab",
    "flux-generic-hmac": "flux",
}


def vector_headers(vector: dict[str, Any]) -> dict[str, str]:
    return vector.get("headers") or {vector["header"]: vector["expected"]}


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_every_signature_vector_verifies(vector: dict[str, Any]) -> None:
    body = vector["payload"].encode()
    if "payload_file" in vector:
        assert (FIXTURES / vector["payload_file"]).read_bytes() == body
    headers = vector_headers(vector)
    if vector["scheme"] == "standard-webhooks-v1":
        stamp = int(headers["webhook-timestamp"])
        verify_standard(headers, body, [vector["secret"]], now=stamp)
        with pytest.raises(SignatureError):
            verify_standard(headers, body, [vector["secret"]], now=stamp + 301)
        return
    verify = PROVIDERS[SCHEME_PROVIDER[vector["scheme"]]].verify
    verify(headers, body, [vector["secret"]])
    with pytest.raises(SignatureError):
        verify(headers, body, [vector["secret"] + "x"])
    if vector["scheme"] != "gitlab-token":  # a plain token does not cover the body
        with pytest.raises(SignatureError):
            verify(headers, body + b" ", [vector["secret"]])


VECTOR_ROUTES = {
    "github-drone-push-sha256": ("gh", {"X-GitHub-Event": "push"}),
    "github-drone-push-sha1": ("gh", {"X-GitHub-Event": "push"}),
    "gitea-go-playground-push": ("gt", {"X-Gitea-Event": "push"}),
    "gitea-drone-pull-request-edited": ("gt", {"X-Gitea-Event": "pull_request"}),
    "bitbucket-server-go-playground-refs-changed": ("bbs", {"X-Event-Key": "repo:refs_changed"}),
    "gitlab-token-drone": ("gl", {"X-Gitlab-Event": "Push Hook"}),
    "flux-generic-hmac-forwarder": ("flux", {}),
}


@pytest.mark.parametrize("vector_id", sorted(VECTOR_ROUTES))
async def test_vectors_accepted_by_the_gateway(gateway: Harness, vector_id: str) -> None:
    """The published header values themselves, sent with their fixture bytes."""
    vector = next(v for v in VECTORS if v["id"] == vector_id)
    receiver, extra = VECTOR_ROUTES[vector_id]
    headers = {"Content-Type": "application/json", **vector_headers(vector), **extra}
    resp = await gateway.hook(receiver, vector["payload"].encode(), headers)
    assert resp.status == 202, await resp.text()
    assert (await gateway.events.get())["data"]["receiver"] == receiver


async def test_gitlab_signing_token_standard_webhooks(gateway: Harness) -> None:
    body = (FIXTURES / "gitlab/push.json").read_bytes()
    secret = SECRETS["gl"][1]
    headers = {"Content-Type": "application/json", "X-Gitlab-Event": "Push Hook"}
    ok = standard_headers(secret, "msg_1", body)
    assert (await gateway.hook("gl", body, headers | ok)).status == 202
    stale = standard_headers(secret, "msg_2", body, timestamp=int(time.time()) - 400)
    resp = await gateway.hook("gl", body, headers | stale)
    assert resp.status == 401
    assert (await resp.json())["error"] == "stale_timestamp"
    await gateway.events.get()
    assert await gateway.events.empty()


async def test_two_secrets_both_verify(gateway: Harness) -> None:
    body = (FIXTURES / "gitea/push_docs.json").read_bytes()
    for secret in SECRETS["gt"]:
        headers = {"Content-Type": "application/json", "X-Gitea-Event": "push"}
        headers["X-Gitea-Signature"] = hex_hmac(secret, body)
        resp = await gateway.hook("gt", body, headers)
        # the second is the same push again: recognised as a duplicate, but it verified
        assert resp.status in (200, 202), await resp.text()
    token_body = (FIXTURES / "gitlab/push.json").read_bytes()
    for i, secret in enumerate(SECRETS["gl"]):
        headers = {"Content-Type": "application/json", "X-Gitlab-Event": "Push Hook"}
        headers["X-Gitlab-Token"] = secret
        headers["Idempotency-Key"] = f"rotation-{i}"
        assert (await gateway.hook("gl", token_body, headers)).status == 202


# For each receiver: the signature header and how to spoil it.
SIG_HEADER = {
    "gh": "X-Hub-Signature-256",
    "gl": "X-Gitlab-Token",
    "gt": "X-Gitea-Signature",
    "fj": "X-Forgejo-Signature",
    "bb": "X-Hub-Signature",
    "bbs": "X-Hub-Signature",
    "gh2": "X-Signature",
    "any": "Authorization",
    "flux": "X-Signature",
    "reg": "Authorization",
}
BODY = {
    "gh": "github/push.json",
    "gl": "gitlab/push.json",
    "gt": "gitea/push.json",
    "fj": "gitea/push.json",
    "bb": "bitbucket-cloud/repo_push.json",
    "bbs": "bitbucket-server/repo_refs_changed.json",
    "gh2": "github/push.json",
    "any": "github/push.json",
    "flux": "flux/event_kustomization_error.json",
    "reg": "registry/envelope_push.json",
}
EVENT = {
    "gh": "push",
    "gl": "Push Hook",
    "gt": "push",
    "bb": "repo:push",
    "bbs": "repo:refs_changed",
}


def spoil(receiver: str, how: str, body: bytes) -> tuple[bytes, dict[str, str]]:
    headers = signed(receiver, body, EVENT.get(receiver))
    name = SIG_HEADER[receiver]
    kind = TYPES[receiver]
    if how == "wrong_secret":
        headers = signed(receiver, body, EVENT.get(receiver), secret="not-the-secret")
    elif how == "byte_changed":
        at = len(body) // 2
        body = body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1 :]
    elif how == "header_missing":
        headers.pop(name)
    elif how == "wrong_algorithm":
        if kind in ("gitlab", "generic", "registry"):
            headers[name] = ("Basic " if kind != "gitlab" else "sha256=") + headers[name]
        elif kind in ("gitea", "forgejo"):
            headers[name] = "sha256=" + headers[name]
        else:
            # the same digest under another algorithm's name, and an unknown algorithm
            headers[name] = "sha1=" + headers[name].split("=", 1)[1]
    return body, headers


# Token receivers (gitlab's X-Gitlab-Token, generic and registry bearer) do not sign the body.
TOKEN_ONLY = {"gl", "any", "reg"}
REFUSALS = [
    (receiver, how)
    for receiver in sorted(TYPES)
    for how in ("wrong_secret", "byte_changed", "header_missing", "wrong_algorithm")
    if not (how == "byte_changed" and receiver in TOKEN_ONLY)
]


@pytest.mark.parametrize(("receiver", "how"), REFUSALS)
async def test_bad_signatures_are_refused(gateway: Harness, receiver: str, how: str) -> None:
    body, headers = spoil(receiver, how, (FIXTURES / BODY[receiver]).read_bytes())
    resp = await gateway.hook(receiver, body, headers)
    assert resp.status == 401, await resp.text()
    answer = await resp.json()
    assert set(answer) == {"error", "detail"}
    assert await gateway.events.empty(0.1)
    assert (await gateway.client.get("/healthz")).status == 200


@pytest.mark.parametrize("algo", ["md5", "sha3_256", ""])
async def test_unknown_algorithm_prefix(memory_gateway: Harness, algo: str) -> None:
    body = (FIXTURES / "github/push.json").read_bytes()
    headers = signed("gh2", body) | {"X-Signature": f"{algo}=" + hex_hmac("x", body)}
    resp = await memory_gateway.hook("gh2", body, headers)
    assert resp.status == 401
    assert await memory_gateway.events.empty(0.05)


async def test_sha512_and_sha1_prefixes_accepted_where_allowed(memory_gateway: Harness) -> None:
    body = (FIXTURES / "flux/event_kustomization_error.json").read_bytes()
    for algo in ("sha1", "sha512"):
        sig = f"{algo}=" + hex_hmac(SECRETS["flux"][0], body, algo)
        resp = await memory_gateway.hook("flux", body, signed("flux", body) | {"X-Signature": sig})
        assert resp.status == 202
    # GitHub's X-Hub-Signature-256 header only ever carries sha256
    body = (FIXTURES / "github/push.json").read_bytes()
    sig = "sha512=" + hex_hmac(SECRETS["gh"][0], body, "sha512")
    headers = signed("gh", body) | {"X-Hub-Signature-256": sig}
    assert (await memory_gateway.hook("gh", body, headers)).status == 401


# Property tests on the verifiers.
secrets_st = st.text(min_size=1, max_size=40).filter(lambda s: s.strip())


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=2048), secret=secrets_st, other=secrets_st)
def test_prefixed_roundtrip_and_tamper(body: bytes, secret: str, other: str) -> None:
    header = "sha256=" + hex_hmac(secret, body)
    assert verify_prefixed(body, header, [other, secret]) == "sha256"
    with pytest.raises(SignatureError):
        verify_prefixed(body + b"\x00", header, [secret])
    if other != secret:
        with pytest.raises(SignatureError):
            verify_prefixed(body, header, [other])


@settings(max_examples=200, deadline=None)
@given(header=st.text(max_size=200), body=st.binary(max_size=256))
def test_verifiers_only_ever_raise_signature_error(header: str, body: bytes) -> None:
    for provider in PROVIDERS.values():
        for name in (
            "X-Hub-Signature-256",
            "X-Hub-Signature",
            "X-Gitea-Signature",
            "X-Forgejo-Signature",
            "X-Gitlab-Token",
            "X-Signature",
            "Authorization",
            "webhook-signature",
        ):
            try:
                provider.verify(
                    {name: header, "webhook-id": "a", "webhook-timestamp": "1"}, body, ["s3cret"]
                )
            except SignatureError:
                continue
            # only a correct signature may pass; random text never is one
            pytest.fail(f"{provider.name} accepted {name}: {header!r}")


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=1024), secret=secrets_st, skew=st.integers(-10_000, 10_000))
def test_relay_signature_window(body: bytes, secret: str, skew: int) -> None:
    now = 1_700_000_000
    headers = sign_headers(secret, body, timestamp=now + skew)
    if abs(skew) <= 300:
        assert verify_relay(headers, body, [secret], now=now)
    else:
        with pytest.raises(SignatureError):
            verify_relay(headers, body, [secret], now=now)


@settings(max_examples=150, deadline=None)
@given(
    body=st.binary(max_size=1024),
    msg_id=st.text(min_size=1, max_size=30).filter(
        lambda s: s.strip() == s and "\n" not in s and s
    ),
)
def test_standard_webhooks_roundtrip(body: bytes, msg_id: str) -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    headers = standard_headers(secret, msg_id, body, timestamp=1_700_000_000)
    assert verify_standard(headers, body, [secret], now=1_700_000_000).startswith("v1,")
    with pytest.raises(SignatureError):
        verify_standard(headers, body + b"!", [secret], now=1_700_000_000)


def test_relay_signature_matches_an_independent_computation() -> None:
    body = json.dumps({"app": "hello"}).encode()
    headers = sign_headers("s", body, timestamp=1234)
    assert headers["X-Relay-Timestamp"] == "1234"
    assert headers["X-Relay-Signature"] == "sha256=" + hex_hmac("s", b"1234." + body)
