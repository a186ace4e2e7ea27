"""Logs: JSON lines with bound context, and no secret in any of them."""

from __future__ import annotations

import io
import json

import structlog

from relay import logging as relay_logging


def configured(secrets: list[str]) -> io.StringIO:
    out = io.StringIO()
    relay_logging.configure(level="debug", fmt="json", secrets=secrets, stream=out)
    return out


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_context_is_bound_to_every_line() -> None:
    out = configured([])
    log = structlog.get_logger("test")
    with relay_logging.bind_context(event_id="e1", deployment_id="d1", app="hello", stage="build"):
        log.info("inside")
    log.info("outside")
    inside, outside = lines(out)
    assert {k: inside[k] for k in ("event_id", "deployment_id", "app", "stage")} == {
        "event_id": "e1",
        "deployment_id": "d1",
        "app": "hello",
        "stage": "build",
    }
    assert "event_id" not in outside and outside["event"] == "outside"


def test_secrets_and_credentials_are_redacted_everywhere() -> None:
    secret = "hunter2-very-secret"
    out = configured([secret])
    log = structlog.get_logger("test")
    log.info(f"message with {secret} inside", nested={"deep": [f"x{secret}y"]})
    log.info(
        "headers", headers={"Authorization": "Bearer abc.def", "X-Hub-Signature-256": "sha256=ff"}
    )
    log.info("url", remote="https://relay:tok3n-value@git.example.com/repo.git")
    log.info("auth", detail="sent Basic dXNlcjpwYXNz to the registry", token="anything")
    text = out.getvalue()
    assert secret not in text
    assert "abc.def" not in text and "sha256=ff" not in text
    assert "tok3n-value" not in text and "dXNlcjpwYXNz" not in text and "anything" not in text
    assert text.count("[redacted]") >= 6


def test_stdlib_logging_goes_through_the_redactor() -> None:
    import logging

    out = configured(["stdlib-secret-1"])
    logging.getLogger("some.library").warning("leaked stdlib-secret-1 here")
    assert "stdlib-secret-1" not in out.getvalue()
    assert "[redacted]" in out.getvalue()
