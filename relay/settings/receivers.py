"""``receivers``: one webhook endpoint each, its provider, secrets, filters and Flux targets."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, model_validator

from relay.settings.base import SettingsModel
from relay.settings.gateway import RateLimitSettings
from relay.settings.secret_files import SecretFile, read_secret_file

ReceiverType = Literal[
    "github",
    "gitlab",
    "gitea",
    "forgejo",
    "bitbucket",
    "bitbucket-server",
    "generic-hmac",
    "generic",
    "flux",
    "registry",
]


class ReconcileTarget(SettingsModel):
    kind: Literal["GitRepository", "OCIRepository", "Kustomization", "HelmRelease", "Bucket"] = (
        Field(description="Flux kind to annotate.")
    )
    name: str = Field(description='Object name, or "*" together with match_labels.')
    namespace: str = Field(default="flux-system", description="Namespace of the object.")
    match_labels: dict[str, str] | None = Field(
        default=None, description='Labels selecting objects when name is "*".'
    )

    @model_validator(mode="after")
    def _star_needs_labels(self) -> ReconcileTarget:
        if self.name == "*" and not self.match_labels:
            raise ValueError('name "*" needs match_labels')
        return self


class ReceiverSettings(SettingsModel):
    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,62})$", description="URL path: /hook/<name>.")
    type: ReceiverType = Field(description="Which provider's signature scheme and payloads.")
    secret_file: SecretFile | None = Field(default=None, description="File holding the secret.")
    secret_files: list[SecretFile] = Field(
        default_factory=list,
        description="Several live secrets at once, so a secret rotates with no lost delivery.",
    )
    events: list[str] | None = Field(
        default=None, description="Provider event names to accept; others answer 200 ignored."
    )
    branches: list[str] | None = Field(
        default=None, description="Branch globs to accept pushes for; others answer 200 ignored."
    )
    tags: bool = Field(default=False, description="Whether tag pushes reconcile the targets too.")
    reconcile: list[ReconcileTarget] = Field(
        default_factory=list, description="Flux objects a push to this receiver reconciles."
    )
    rate_limit: RateLimitSettings | None = Field(
        default=None, description="Per-source-IP token bucket; default: the gateway's."
    )
    _secrets: list[SecretStr] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _load_secrets(self) -> ReceiverSettings:
        files = [*([self.secret_file] if self.secret_file else []), *self.secret_files]
        if not files:
            raise ValueError(f"receiver {self.name!r} needs secret_file or secret_files")
        self._secrets = [read_secret_file(f) for f in files]
        return self

    @property
    def secrets(self) -> list[SecretStr]:
        """The live secrets, read from the files when the settings loaded."""
        return self._secrets
