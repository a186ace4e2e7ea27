"""Fixtures of the API tests: the live gateway on memory:// with every receiver type."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.live import LiveGateway, fuzz_settings


@pytest.fixture(scope="module")
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    """One gateway per test module, named after it in the run's report."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    with LiveGateway(fuzz_settings(tmp_path_factory.mktemp("live")), name=name) as gateway:
        yield gateway
