"""Shared helpers for commands: loading settings with logs configured, and extra commands."""

from __future__ import annotations

import argparse
from types import ModuleType

from relay import logging as relay_logging
from relay.bus import Bus, connect
from relay.errors import BrokerUnavailable
from relay.settings import Settings, load_settings

# Command modules added by later features register here (each has ``register(subparsers)``).
EXTRA: list[ModuleType] = []


def settings_for(args: argparse.Namespace) -> Settings:
    """Load settings (``ConfigError`` propagates to main's exit 2) and configure logging."""
    settings = load_settings(args.config)
    relay_logging.configure(
        level=settings.log.level, fmt=settings.log.format, secrets=settings.secret_values()
    )
    return settings


async def broker_bus(args: argparse.Namespace, command: str) -> Bus:
    """A started bus for commands that talk to a broker from outside the relay's processes."""
    settings = settings_for(args)
    if settings.broker.url.startswith("memory://"):
        raise SystemExit(
            f"relay {command} needs a RabbitMQ broker: memory:// lives inside one process"
        )
    bus = connect(settings.broker)
    try:
        await bus.start()
    except BrokerUnavailable as exc:
        raise SystemExit(f"relay {command}: {exc}") from None
    return bus
