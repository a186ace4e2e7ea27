"""``log``: level and format of the relay's own logs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from relay.settings.base import SettingsModel


class LogSettings(SettingsModel):
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Level."
    )
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: JSON when stdout is not a terminal."
    )
