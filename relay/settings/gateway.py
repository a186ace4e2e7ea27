"""``http``: the gateway's listener, its request limits and per-source-IP rate limits."""

from __future__ import annotations

from pydantic import Field

from relay.settings.base import SettingsModel


class RateLimitSettings(SettingsModel):
    requests: int = Field(
        default=100, ge=1, description="Requests allowed per source IP per window."
    )
    per_seconds: float = Field(default=600.0, gt=0, description="Length of the window in seconds.")


class HttpSettings(SettingsModel):
    host: str = Field(default="127.0.0.1", description="Address the gateway listens on.")
    port: int = Field(default=8099, ge=0, le=65535, description="Port the gateway listens on.")
    public_url: str | None = Field(
        default=None,
        description="Base URL users reach the gateway at (the tunnel's hostname); used in printed "
        "receiver URLs and status links. Default: http://host:port.",
    )
    max_body_bytes: int = Field(
        default=25 * 1024 * 1024, description="Largest accepted body in bytes (GitHub's cap)."
    )
    read_timeout: float = Field(
        default=30.0, description="Seconds a client may take to send a body."
    )
    header_timeout: float = Field(
        default=10.0, description="Seconds a client may take to send headers."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Peer addresses or CIDRs (the tunnel, the ingress) whose X-Forwarded-For / "
        "CF-Connecting-IP is believed for rate limiting.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port a worker-only process serves /healthz and /metrics on (the gateway "
        "serves them on its own port). Unset: no listener.",
    )
    dedupe_window: int = Field(
        default=10_000,
        ge=0,
        description="Delivery ids remembered per process to answer duplicates.",
    )
    rate_limit: RateLimitSettings = Field(
        default_factory=lambda: RateLimitSettings(requests=600, per_seconds=600.0),
        description="Per-source-IP token bucket of every receiver without its own rate_limit "
        "(a bucket per receiver); 600 per 10 minutes absorbs a provider's bursts.",
    )
    publish_timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds a request waits for the broker's confirm before answering 503 "
        "(GitHub gives up after 10 s).",
    )
