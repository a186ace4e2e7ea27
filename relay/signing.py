"""HMAC signatures shared by the gateway, the CLI (``relay sign``) and the callbacks.

Three schemes, all over the raw body bytes and compared in constant time:

- *prefixed hex* (``sha256=<hex>``): GitHub, Bitbucket, Flux generic-hmac; the algorithm is taken
  from the prefix and must be one the caller allows;
- *relay*: ``X-Relay-Timestamp: <unix seconds>`` and ``X-Relay-Signature: sha256=<hex>`` over
  ``"<timestamp>.<body>"``, accepted within a window of the local clock;
- *Standard Webhooks*: ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature: v1,<base64>``
  (space-separated list) over ``"<id>.<timestamp>.<body>"``; ``whsec_`` secrets are base64 keys.

Every verifier takes several secrets (rotation) and tries all of them without stopping early, so
the time taken does not tell which one matched. A failure raises ``SignatureError`` whose
``reason`` is a short machine code; neither its message nor its reason ever holds a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

from relay.errors import RelayError

TIMESTAMP_HEADER = "X-Relay-Timestamp"
SIGNATURE_HEADER = "X-Relay-Signature"
WEBHOOK_ID = "webhook-id"
WEBHOOK_TIMESTAMP = "webhook-timestamp"
WEBHOOK_SIGNATURE = "webhook-signature"
DEFAULT_WINDOW = 300
HEX_ALGORITHMS = frozenset({"sha1", "sha224", "sha256", "sha384", "sha512"})
_DIGEST_HEX_LENGTH = {name: hashlib.new(name).digest_size * 2 for name in HEX_ALGORITHMS}
_HEX_DIGITS = frozenset("0123456789abcdef")


def header_bytes(value: str) -> bytes:
    """A header value as the bytes that were sent (aiohttp decodes with surrogateescape)."""
    return value.encode("utf-8", "surrogateescape")


class SignatureError(RelayError):
    """A request whose signature, token or timestamp does not verify (HTTP 401)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def secret_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: ``whsec_<base64>``, else the UTF-8 text.

    Only Standard Webhooks decode the prefix; GitHub-style and relay signatures always use the
    secret's text as it is (what providers and n8n's Crypto node do)."""
    if secret.startswith("whsec_"):
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            key = b""
        if key:  # an empty key would make every signature forgeable: use the text as it is
            return key
    return secret.encode()


def hmac_hex(key: bytes, message: bytes, algorithm: str = "sha256") -> str:
    return hmac.new(key, message, algorithm).hexdigest()


def any_equal(candidates: Sequence[bytes], given: bytes) -> bool:
    """Constant-time: compares ``given`` with every candidate, never stopping early."""
    found = False
    for candidate in candidates:
        found |= hmac.compare_digest(candidate, given)
    return found


def split_prefixed(value: str, allowed: frozenset[str]) -> tuple[str, str]:
    """``sha256=<hex>`` → (algorithm, hex); raises for a missing or unallowed algorithm."""
    algorithm, sep, digest = value.strip().partition("=")
    algorithm = algorithm.lower()
    if not sep or not digest:
        raise SignatureError("malformed_signature", "the signature is not <algorithm>=<hex>")
    if algorithm not in allowed:
        names = ", ".join(sorted(allowed))
        raise SignatureError("bad_algorithm", f"signature algorithm must be one of: {names}")
    return algorithm, digest.lower()


def verify_hex(
    body: bytes, digest: str, secrets: Sequence[str], *, algorithm: str = "sha256"
) -> None:
    """Check a bare hex HMAC of ``body`` against every secret."""
    digest = digest.strip().lower()
    if len(digest) != _DIGEST_HEX_LENGTH[algorithm] or not _HEX_DIGITS.issuperset(digest):
        raise SignatureError("bad_signature", f"the signature is not a {algorithm} hex digest")
    expected = [hmac_hex(s.encode(), body, algorithm).encode() for s in secrets]
    if not any_equal(expected, digest.encode()):
        raise SignatureError("bad_signature", "the signature does not match the body")


def verify_prefixed(
    body: bytes,
    header_value: str,
    secrets: Sequence[str],
    *,
    allowed: frozenset[str] = HEX_ALGORITHMS,
) -> str:
    """Verify ``<algorithm>=<hex>``; returns the algorithm used."""
    algorithm, digest = split_prefixed(header_value, allowed)
    verify_hex(body, digest, secrets, algorithm=algorithm)
    return algorithm


def verify_token(given: str, secrets: Sequence[str]) -> None:
    """A shared token sent verbatim (GitLab, Bearer): constant-time against every secret."""
    if not any_equal([s.encode() for s in secrets], header_bytes(given)):
        raise SignatureError("bad_token", "the token does not match")


def check_timestamp(raw: str, *, now: float | None = None, window: int = DEFAULT_WINDOW) -> int:
    """Parse a unix-seconds timestamp and require it within ``window`` of the clock."""
    digits = raw.strip()
    if not digits.isascii() or not digits.isdigit() or len(digits) > 12:
        raise SignatureError("bad_timestamp", "the timestamp is not unix seconds")
    stamp = int(digits)
    skew = stamp - (time.time() if now is None else now)
    if skew < -window:
        raise SignatureError("stale_timestamp", f"the timestamp is older than {window} s")
    if skew > window:
        raise SignatureError("future_timestamp", f"the timestamp is more than {window} s ahead")
    return stamp


def relay_signature(secret: str, body: bytes, timestamp: int) -> str:
    """``sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``."""
    return "sha256=" + hmac_hex(secret.encode(), f"{timestamp}.".encode() + body)


def sign_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The two headers of a signed request to (or callback from) the relay."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        TIMESTAMP_HEADER: str(stamp),
        SIGNATURE_HEADER: relay_signature(secret, body, stamp),
    }


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`` (Standard Webhooks)."""
    signed = header_bytes(f"{msg_id}.{timestamp}.") + body
    mac = hmac.new(secret_key(secret), signed, "sha256").digest()
    return "v1," + base64.b64encode(mac).decode()


def standard_headers(
    secret: str, msg_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        WEBHOOK_ID: msg_id,
        WEBHOOK_TIMESTAMP: str(stamp),
        WEBHOOK_SIGNATURE: standard_signature(secret, msg_id, stamp, body),
    }


def verify_standard(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    *,
    now: float | None = None,
    window: int = DEFAULT_WINDOW,
) -> str:
    """Verify Standard Webhooks headers; returns the ``v1,…`` signature that matched."""
    msg_id, stamp_raw, sig_list = (
        headers.get(WEBHOOK_ID),
        headers.get(WEBHOOK_TIMESTAMP),
        headers.get(WEBHOOK_SIGNATURE),
    )
    if not msg_id or not stamp_raw or not sig_list:
        raise SignatureError("missing_signature", "webhook-id, -timestamp and -signature needed")
    stamp = check_timestamp(stamp_raw, now=now, window=window)
    expected = [standard_signature(s, msg_id, stamp, body).encode() for s in secrets]
    for given in sig_list.split():
        if given.startswith("v1,") and any_equal(expected, header_bytes(given)):
            return given
    raise SignatureError("bad_signature", "no webhook-signature matches the body")


def verify_relay(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    *,
    now: float | None = None,
    window: int = DEFAULT_WINDOW,
) -> str:
    """Verify a signed request (relay headers, else Standard Webhooks); returns the signature.

    The returned value identifies the signature for replay protection: each is accepted once.
    """
    if headers.get(SIGNATURE_HEADER) is None and headers.get(WEBHOOK_SIGNATURE) is not None:
        return verify_standard(headers, body, secrets, now=now, window=window)
    stamp_raw, given = headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER)
    if not stamp_raw or not given:
        raise SignatureError(
            "missing_signature", f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required"
        )
    stamp = check_timestamp(stamp_raw, now=now, window=window)
    _, digest = split_prefixed(given, frozenset({"sha256"}))
    verify_hex(f"{stamp}.".encode() + body, digest, secrets)
    return f"{stamp}:{digest}"
