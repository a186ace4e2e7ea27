"""The deploy-chain fields (CONTRACT section 5) each follow-up event carries on unchanged."""

from __future__ import annotations

import time
from typing import Any

from relay.events.data import DeployChain


def carried(data: DeployChain, **stage_seconds: float) -> dict[str, Any]:
    """``version``, ``callback_url``, ``requested_at`` and ``stages`` (plus the given stages)."""
    return {
        "version": data.version,
        "callback_url": data.callback_url,
        "requested_at": data.requested_at,
        "stages": {**data.stages, **stage_seconds},
    }


def seconds_since(started: float) -> float:
    """Seconds since a ``time.monotonic()`` reading, rounded for people."""
    return round(time.monotonic() - started, 3)
