"""Settings: one object, loaded once in the entry point and passed explicitly.

Sources, highest priority first: ``RELAY_…`` environment variables (nested keys joined by
``__``, e.g. ``RELAY_BROKER__URL``), then the YAML file named by ``--config`` / ``RELAY_CONFIG``,
then the defaults written here. Secrets are never accepted on argv: each secret-bearing model
takes a ``*_file`` path (a mounted Kubernetes Secret) and reads it into a ``SecretStr`` while the
settings validate, so a missing or empty file is a configuration error that names its key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from relay.errors import ConfigError

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


def read_secret_file(path: Path) -> SecretStr:
    """Read one secret file; trailing newlines (as ``echo`` writes them) are not part of it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"secret file {path} does not exist") from None
    except OSError as exc:
        raise ValueError(f"secret file {path} cannot be read: {exc.strerror}") from None
    value = text.rstrip("\r\n")
    if not value.strip():
        raise ValueError(f"secret file {path} is empty")
    return SecretStr(value)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrySettings(_Model):
    delays: list[float] = Field(
        default=[1.0, 5.0, 30.0, 120.0],
        description="Seconds to wait before each retry of failed work, one delay queue per step; "
        "the last step repeats.",
    )
    max_attempts: int = Field(
        default=5, ge=1, description="Attempts before a message goes to dead letters."
    )


class BrokerSettings(_Model):
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
    retry: RetrySettings = Field(
        default_factory=RetrySettings, description="Retry and dead-letter policy."
    )
    stream_max_age: str = Field(
        default="7D", description="Retention by age of the history stream (RabbitMQ x-max-age)."
    )
    stream_max_bytes: int = Field(
        default=256 * 1024 * 1024, description="Retention by size of the history stream, in bytes."
    )


class HttpSettings(_Model):
    host: str = Field(default="127.0.0.1", description="Address the gateway listens on.")
    port: int = Field(default=8099, ge=0, le=65535, description="Port the gateway listens on.")
    public_url: str | None = Field(
        default=None,
        description="Base URL users reach the gateway at (the tunnel's hostname); used in printed "
        "receiver URLs and status links. Default: http://host:port.",
    )
    max_body_bytes: int = Field(
        default=25 * 1024 * 1024, description="Largest accepted body in bytes (GitHub's cap)."
    )
    read_timeout: float = Field(
        default=30.0, description="Seconds a client may take to send a body."
    )
    header_timeout: float = Field(
        default=10.0, description="Seconds a client may take to send headers."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Peer addresses or CIDRs (the tunnel, the ingress) whose X-Forwarded-For / "
        "CF-Connecting-IP is believed for rate limiting.",
    )
    dedupe_window: int = Field(
        default=10_000,
        ge=0,
        description="Delivery ids remembered per process to answer duplicates.",
    )


class RateLimitSettings(_Model):
    requests: int = Field(
        default=100, ge=1, description="Requests allowed per source IP per window."
    )
    per_seconds: float = Field(default=600.0, gt=0, description="Length of the window in seconds.")


class ReconcileTarget(_Model):
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


class ReceiverSettings(_Model):
    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,62})$", description="URL path: /hook/<name>.")
    type: ReceiverType = Field(description="Which provider's signature scheme and payloads.")
    secret_file: Path | None = Field(default=None, description="File holding the shared secret.")
    secret_files: list[Path] = Field(
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
    secrets: list[SecretStr] = Field(
        default_factory=list, exclude=True, description="Loaded from the files; not configurable."
    )

    @model_validator(mode="before")
    @classmethod
    def _load_secrets(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("secrets"):
            raise ValueError("secrets are read from secret_file / secret_files, never inline")
        files = [
            *([data["secret_file"]] if data.get("secret_file") else []),
            *data.get("secret_files", []),
        ]
        if not files:
            raise ValueError(f"receiver {data.get('name')!r} needs secret_file or secret_files")
        return {**data, "secrets": [read_secret_file(Path(f)) for f in files]}


class RegistrySettings(_Model):
    url: str = Field(default="127.0.0.1:5000", description="host[:port] of the Docker Registry v2.")
    username: str | None = Field(default=None, description="User for Basic / token auth.")
    password_file: Path | None = Field(default=None, description="File holding the password.")
    password: SecretStr | None = Field(
        default=None, exclude=True, description="Loaded from password_file."
    )
    insecure: bool = Field(
        default=False, description="Allow plain HTTP (loopback or lab registries)."
    )
    keep_versions: int = Field(
        default=5, ge=1, description="Newest versions kept per app; older are deleted."
    )

    @model_validator(mode="before")
    @classmethod
    def _load_password(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("password_file"):
            return {**data, "password": read_secret_file(Path(data["password_file"]))}
        return data


class GitOpsSettings(_Model):
    url: str = Field(default="", description="Clone URL of the GitOps repository (https or ssh).")
    branch: str = Field(default="main", description="Branch Flux follows.")
    path: str = Field(
        default="kubernetes/rpi-cluster/apps/dynamic",
        description="Directory holding one folder per app and the parent kustomization.yaml.",
    )
    username: str = Field(default="relay", description="User for HTTPS auth.")
    token_file: Path | None = Field(
        default=None, description="File holding the HTTPS token/password."
    )
    token: SecretStr | None = Field(
        default=None, exclude=True, description="Loaded from token_file."
    )
    ssh_key_file: Path | None = Field(default=None, description="Deploy key for SSH URLs.")
    known_hosts_file: Path | None = Field(default=None, description="known_hosts for SSH URLs.")
    author_name: str = Field(default="relay", description="Commit author name.")
    author_email: str = Field(default="relay@localhost", description="Commit author e-mail.")
    batch_window_ms: int = Field(
        default=300, ge=0, description="How long deploys are gathered into one commit and push."
    )
    batch_max: int = Field(default=50, ge=1, description="Most deploys in one commit.")
    workdir: Path | None = Field(
        default=None, description="Where the persistent working clone lives (default: a cache dir)."
    )
    source_name: str = Field(default="flux-system", description="Flux GitRepository for this repo.")
    source_namespace: str = Field(default="flux-system", description="Its namespace.")

    @model_validator(mode="before")
    @classmethod
    def _load_token(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("token_file"):
            return {**data, "token": read_secret_file(Path(data["token_file"]))}
        return data


class BuilderSettings(_Model):
    backend: Literal["buildah", "docker", "buildkit", "none"] = Field(
        default="buildah", description="How images are built (buildah is daemonless)."
    )
    concurrency: int = Field(
        default=2, ge=1, description="Builds at once (2 suits a Raspberry Pi)."
    )
    timeout: float = Field(default=900.0, gt=0, description="Seconds before a build is killed.")
    storage_driver: Literal["overlay", "vfs"] | None = Field(
        default=None,
        description="buildah storage driver; default: overlay where it works, else vfs.",
    )
    buildkit_addr: str = Field(default="tcp://buildkitd:1234", description="buildctl --addr.")
    platform: str | None = Field(
        default=None, description="e.g. linux/arm64 for Raspberry Pi nodes."
    )
    max_context_bytes: int = Field(
        default=10 * 1024 * 1024, description="Cap on an inline context."
    )
    max_file_bytes: int = Field(default=1024 * 1024, description="Cap on one inline file.")


class ResourceSettings(_Model):
    cpu_request: str = Field(default="100m", description="Container CPU request.")
    memory_request: str = Field(default="128Mi", description="Container memory request.")
    cpu_limit: str = Field(default="500m", description="Container CPU limit.")
    memory_limit: str = Field(default="512Mi", description="Container memory limit.")


class ManifestSettings(_Model):
    gateway_name: str = Field(default="cilium-gateway", description="HTTPRoute parentRef name.")
    gateway_namespace: str = Field(default="network", description="HTTPRoute parentRef namespace.")
    resources: ResourceSettings = Field(default_factory=ResourceSettings, description="Defaults.")
    read_only_root_filesystem: bool = Field(
        default=False, description="Set readOnlyRootFilesystem."
    )
    network_policy: bool = Field(default=False, description="Write a NetworkPolicy per app.")
    kustomization_timeout: str = Field(default="3m", description="Flux Kustomization spec.timeout.")
    kustomization_interval: str = Field(
        default="10m", description="Flux Kustomization spec.interval."
    )


class CallbackSettings(_Model):
    header_name: str | None = Field(
        default=None, description="Static header sent with every callback (n8n Wait node auth)."
    )
    header_value_file: Path | None = Field(default=None, description="File holding its value.")
    header_value: SecretStr | None = Field(default=None, exclude=True, description="Loaded.")
    timeout: float = Field(default=10.0, description="Seconds per callback attempt.")

    @model_validator(mode="before")
    @classmethod
    def _load_value(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("header_value_file"):
            return {**data, "header_value": read_secret_file(Path(data["header_value_file"]))}
        return data


class DeploySettings(_Model):
    secret_file: Path | None = Field(default=None, description="Shared secret of signed deploys.")
    secret_files: list[Path] = Field(
        default_factory=list, description="Extra live secrets (rotation)."
    )
    secrets: list[SecretStr] = Field(default_factory=list, exclude=True, description="Loaded.")
    namespace: str = Field(default="dynamic-apps", description="Namespace apps run in.")
    domain: str = Field(
        default="apps.example.com", description="Apps are served at <app>.<domain>."
    )
    url_scheme: Literal["http", "https"] = Field(default="https", description="Scheme of app URLs.")
    signature_window: int = Field(default=300, description="Seconds a signed request stays valid.")
    rate_limit: RateLimitSettings = Field(
        default_factory=RateLimitSettings, description="Per-source-IP limit on /deploy."
    )
    registry: RegistrySettings = Field(default_factory=RegistrySettings, description="Registry.")
    gitops: GitOpsSettings = Field(default_factory=GitOpsSettings, description="GitOps repository.")
    builder: BuilderSettings = Field(default_factory=BuilderSettings, description="Image builds.")
    manifests: ManifestSettings = Field(default_factory=ManifestSettings, description="Rendering.")
    callback: CallbackSettings = Field(default_factory=CallbackSettings, description="Callbacks.")

    @model_validator(mode="before")
    @classmethod
    def _load_secrets(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        files = [
            *([data["secret_file"]] if data.get("secret_file") else []),
            *data.get("secret_files", []),
        ]
        return {**data, "secrets": [read_secret_file(Path(f)) for f in files]}


class KubernetesSettings(_Model):
    kubeconfig: Path | None = Field(
        default=None, description="kubeconfig file; absent: in-cluster."
    )
    context: str | None = Field(default=None, description="kubeconfig context to use.")
    flux_namespace: str = Field(default="flux-system", description="Where Flux objects live.")
    rollout_deadline: float = Field(default=300.0, description="Seconds a rollout may take.")
    reconcile_timeout: float = Field(default=300.0, description="Seconds Flux may take to apply.")
    coalesce_ms: int = Field(
        default=500, description="Pushes to one target within this → one patch."
    )
    probe_urls: bool = Field(default=False, description="Also GET the app URL before ready.")
    parent_kustomization: str | None = Field(
        default="flux-system",
        description="Flux Kustomization (in flux_namespace) that applies the apps directory and so "
        "creates and prunes each app's Kustomization; reconciled for new and deleted apps. "
        "None: wait for its own interval.",
    )
    kustomization_appear_timeout: float = Field(
        default=120.0,
        gt=0,
        description="Seconds a new app's Kustomization may take to appear after the commit.",
    )
    concurrency: int = Field(
        default=1000,
        ge=1,
        description="Deploys the reconcile and watch workers follow at once (they mostly wait).",
    )


class SinkSettings(_Model):
    type: Literal["webhook", "slack", "discord"] = Field(description="Kind of sink.")
    url_file: Path = Field(description="File holding the sink URL (webhook URLs are secrets).")
    url: SecretStr | None = Field(default=None, exclude=True, description="Loaded from url_file.")
    events: list[str] = Field(
        default_factory=lambda: ["deploy.ready", "deploy.failed", "app.deleted"],
        description="Routing keys sent to this sink.",
    )
    template: str | None = Field(default=None, description="Message template (str.format fields).")

    @model_validator(mode="before")
    @classmethod
    def _load_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("url_file"):
            return {**data, "url": read_secret_file(Path(data["url_file"]))}
        return data


class NotifySettings(_Model):
    sinks: list[SinkSettings] = Field(default_factory=list, description="Extra notification sinks.")


class LogSettings(_Model):
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Level."
    )
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: JSON when stdout is not a terminal."
    )


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
    elif isinstance(value, list | tuple):
        for item in value:
            _collect_secrets(item, found)


def config_path(explicit: str | Path | None = None) -> Path | None:
    raw = explicit or os.environ.get("RELAY_CONFIG")
    return Path(raw) if raw else None


def load_settings(path: str | Path | None = None) -> Settings:
    """Load settings from the YAML file and the environment, or raise ``ConfigError``."""
    file = config_path(path)
    data: dict[str, Any] = {}
    if file is not None:
        data = _read_yaml(file)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, file)) from None


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {file} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {file} is not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {file}: the top level must be a mapping of keys")
    return raw


def _describe(exc: ValidationError, file: Path | None) -> str:
    where = f"config file {file}" if file else "settings"
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{where}: key {key}: {msg}")
    return "\n".join(lines)
