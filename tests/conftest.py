"""Fixtures every test area shares: where the shared fixtures live, and a private RabbitMQ vhost."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import rabbitmq

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"the shared fixtures are missing: expected {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """The URL of a RabbitMQ vhost of this run's own, deleted afterwards."""
    vhost = rabbitmq.create_vhost()
    try:
        yield rabbitmq.url_for(vhost)
    finally:
        rabbitmq.delete_vhost(vhost)
