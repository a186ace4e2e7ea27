"""HMAC signatures of requests to and from the relay (CONTRACT section 3)."""

from __future__ import annotations

import hashlib
import hmac
import time


def relay_signature(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def sign_headers(secret: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {"X-Relay-Timestamp": str(ts), "X-Relay-Signature": relay_signature(secret, body, ts)}
