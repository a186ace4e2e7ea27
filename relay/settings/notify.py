"""``notify``: the extra sinks deploy outcomes are sent to (their URLs are secrets)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, model_validator

from relay.settings.base import SettingsModel
from relay.settings.secret_files import SecretFile, read_secret_file


class SinkSettings(SettingsModel):
    type: Literal["webhook", "slack", "discord"] = Field(description="Kind of sink.")
    url_file: SecretFile = Field(
        description="File holding the sink URL (webhook URLs are secrets)."
    )
    events: list[str] = Field(
        default_factory=lambda: ["deploy.ready", "deploy.failed", "app.deleted"],
        description="Routing keys sent to this sink.",
    )
    template: str | None = Field(default=None, description="Message template (str.format fields).")

    _url: SecretStr | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _load_url(self) -> SinkSettings:
        self._url = read_secret_file(self.url_file)
        return self

    @property
    def url(self) -> SecretStr:
        assert self._url is not None
        return self._url


class NotifySettings(SettingsModel):
    sinks: list[SinkSettings] = Field(default_factory=list, description="Extra notification sinks.")
