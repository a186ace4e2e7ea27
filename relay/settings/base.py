"""The base of every settings section: frozen, and an unknown key is an error naming itself."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SettingsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
