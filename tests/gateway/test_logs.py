"""Secrets never reach the logs: neither configured ones nor what clients send as tokens."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from relay.logging import configure
from relay.signing import sign_headers
from tests.gateway.conftest import DEPLOY_SECRET, FIXTURES, SECRETS, memory_harness, signed

PUSH = (FIXTURES / "github/push.json").read_bytes()


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure(level="debug", fmt="json", stream=buffer)
    yield buffer
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_no_secret_in_logs(tmp_path: Path, log_output: io.StringIO) -> None:
    sent_tokens = ["wrong-gitlab-token-1234", "wrong-bearer-token-5678"]
    async with memory_harness(tmp_path) as h:
        for receiver in SECRETS:
            await h.hook(receiver, PUSH, signed(receiver, PUSH))
            await h.hook(receiver, PUSH, signed(receiver, PUSH, secret="bad-secret-0000"))
        await h.hook(
            "gl", PUSH, {"Content-Type": "application/json", "X-Gitlab-Token": sent_tokens[0]}
        )
        await h.hook(
            "any",
            PUSH,
            {"Content-Type": "application/json", "Authorization": f"Bearer {sent_tokens[1]}"},
        )
        body = json.dumps({"app": "hello", "version": "v1", "image": "r/hello:v1"}).encode()
        headers = {"Content-Type": "application/json", **sign_headers(DEPLOY_SECRET, body)}
        assert (await h.client.post("/deploy", data=body, headers=headers)).status == 202
        await h.bus.close()  # and the failure path too
        await h.hook("gh", PUSH, signed("gh", PUSH))
    text = log_output.getvalue()
    assert "event published" in text and "deployment requested" in text  # captured
    every = [s for values in SECRETS.values() for s in values] + [DEPLOY_SECRET, *sent_tokens]
    for secret in every:
        assert secret not in text
    for line in text.splitlines():
        json.loads(line)  # one JSON object per line
