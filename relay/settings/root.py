"""``Settings``: the one object holding every section, and where its values come from.

Sources, highest priority first: ``RELAY_…`` environment variables (nested keys joined by
``__``, e.g. ``RELAY_BROKER__URL``), then the YAML file (passed in as init kwargs by
``relay.settings.loading``), then the defaults of each section.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from relay.settings.broker import BrokerSettings
from relay.settings.deploy import DeploySettings
from relay.settings.gateway import HttpSettings
from relay.settings.kubernetes import KubernetesSettings
from relay.settings.log import LogSettings
from relay.settings.notify import NotifySettings
from relay.settings.receivers import ReceiverSettings


class Settings(BaseSettings):
    """Everything the relay reads at start; see each field's description."""

    model_config = SettingsConfigDict(
        env_prefix="RELAY_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    broker: BrokerSettings = Field(default_factory=BrokerSettings, description="The event bus.")
    http: HttpSettings = Field(default_factory=HttpSettings, description="The gateway's listener.")
    receivers: list[ReceiverSettings] = Field(
        default_factory=list, description="Webhook receivers."
    )
    deploy: DeploySettings = Field(default_factory=DeploySettings, description="Deploy pipeline.")
    kubernetes: KubernetesSettings | None = Field(
        default=None, description="Cluster access; absent outside a cluster: stages are skipped."
    )
    notify: NotifySettings = Field(default_factory=NotifySettings, description="Notifications.")
    log: LogSettings = Field(default_factory=LogSettings, description="Logging.")

    @field_validator("receivers")
    @classmethod
    def _unique_names(cls, value: list[ReceiverSettings]) -> list[ReceiverSettings]:
        names = [r.name for r in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"receiver names must be unique: {', '.join(dupes)}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the YAML file (passed as init kwargs), which beats defaults.
        return (env_settings, init_settings)

    def secret_values(self) -> list[str]:
        """Every secret value loaded, for the log redactor."""
        found: list[str] = []
        _collect_secrets(self, found)
        return [s for s in found if s]

    def receiver(self, name: str) -> ReceiverSettings | None:
        return next((r for r in self.receivers if r.name == name), None)

    def public_base_url(self) -> str:
        return (self.http.public_url or f"http://{self.http.host}:{self.http.port}").rstrip("/")


def _collect_secrets(value: object, found: list[str]) -> None:
    if isinstance(value, SecretStr):
        found.append(value.get_secret_value())
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _collect_secrets(getattr(value, name), found)
        for private in (value.__pydantic_private__ or {}).values():
            _collect_secrets(private, found)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect_secrets(item, found)
