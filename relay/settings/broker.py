"""``broker``: which bus, its exchange and queues, confirms, retries and the history stream."""

from __future__ import annotations

from pydantic import Field

from relay.settings.base import SettingsModel


class RetrySettings(SettingsModel):
    delays: list[float] = Field(
        default=[1.0, 5.0, 30.0, 120.0],
        description="Seconds to wait before each retry of failed work, one delay queue per step; "
        "the last step repeats.",
    )
    max_attempts: int = Field(
        default=5, ge=1, description="Attempts before a message goes to dead letters."
    )


class BrokerSettings(SettingsModel):
    url: str = Field(
        default="memory://",
        description="amqp://user:pass@host:port/vhost for RabbitMQ, or memory:// for the "
        "in-process bus (one process only).",
    )
    exchange: str = Field(
        default="relay.events", description="The topic exchange every event goes to."
    )
    queue_prefix: str = Field(
        default="relay", description="Prefix of every queue the relay declares."
    )
    confirm_timeout: float = Field(
        default=5.0, gt=0, description="Seconds a publish may wait for the broker's confirm."
    )
    publisher_channels: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Confirm channels publishes take turns on (RabbitMQ): more lets the broker "
        "route and confirm several publishes at once.",
    )
    retry: RetrySettings = Field(
        default_factory=RetrySettings, description="Retry and dead-letter policy."
    )
    reconnect_interval: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between attempts to reconnect after the broker connection is lost.",
    )
    history: bool = Field(
        default=True,
        description="Record every relay event in a history stream (a RabbitMQ stream queue, or "
        "memory) so the status API rebuilds after a restart and `relay tail --since` replays. "
        "It also makes every relay event routable, even one no worker consumes.",
    )
    stream_max_age: str = Field(
        default="7D", description="Retention by age of the history stream (RabbitMQ x-max-age)."
    )
    stream_max_bytes: int = Field(
        default=256 * 1024 * 1024, description="Retention by size of the history stream, in bytes."
    )
    memory_history_bytes: int = Field(
        default=32 * 1024 * 1024,
        gt=0,
        description="memory:// only: retention by size of the in-process history (encoded "
        "events, in bytes); it lives in the process's memory, so it is kept smaller.",
    )
