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
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
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


def _check_secret_file(path: Path) -> Path:
    read_secret_file(path)
    return path


# A path to a secret, checked (exists, readable, not empty) while the settings validate.
SecretFile = Annotated[Path, AfterValidator(_check_secret_file)]


def _load(path: Path | None) -> SecretStr | None:
    return read_secret_file(path) if path is not None else None


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
    publisher_channels: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Confirm channels publishes take turns on (RabbitMQ): more lets the broker "
        "route and confirm several publishes at once.",
    )
    retry: RetrySettings = Field(
        default_factory=RetrySettings, description="Retry and dead-letter policy."
    )
    reconnect_interval: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between attempts to reconnect after the broker connection is lost.",
    )
    history: bool = Field(
        default=True,
        description="Record every relay event in a history stream (a RabbitMQ stream queue, or "
        "memory) so the status API rebuilds after a restart and `relay tail --since` replays. "
        "It also makes every relay event routable, even one no worker consumes.",
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
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port a worker-only process serves /healthz and /metrics on (the gateway "
        "serves them on its own port). Unset: no listener.",
    )
    dedupe_window: int = Field(
        default=10_000,
        ge=0,
        description="Delivery ids remembered per process to answer duplicates.",
    )
    rate_limit: RateLimitSettings = Field(
        default_factory=lambda: RateLimitSettings(requests=600, per_seconds=600.0),
        description="Per-source-IP token bucket of every receiver without its own rate_limit "
        "(a bucket per receiver); 600 per 10 minutes absorbs a provider's bursts.",
    )
    publish_timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds a request waits for the broker's confirm before answering 503 "
        "(GitHub gives up after 10 s).",
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


class RegistrySettings(_Model):
    url: str = Field(default="127.0.0.1:5000", description="host[:port] of the Docker Registry v2.")
    username: str | None = Field(default=None, description="User for Basic / token auth.")
    password_file: SecretFile | None = Field(default=None, description="File holding the password.")
    insecure: bool = Field(
        default=False, description="Allow plain HTTP (loopback or lab registries)."
    )
    keep_versions: int = Field(
        default=5, ge=1, description="Newest versions kept per app; older are deleted."
    )
    retention_min_age: float = Field(
        default=600.0,
        ge=0,
        description="Seconds: an image younger than this (by its config's created time) is never "
        "deleted by retention, so concurrent deploys of one app cannot remove each other's image.",
    )
    request_timeout: float = Field(
        default=30.0, gt=0, description="Seconds one registry API request may take."
    )

    _password: SecretStr | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _load_password(self) -> RegistrySettings:
        self._password = _load(self.password_file)
        return self

    @property
    def password(self) -> SecretStr | None:
        return self._password


class GitOpsSettings(_Model):
    url: str = Field(default="", description="Clone URL of the GitOps repository (https or ssh).")
    branch: str = Field(default="main", description="Branch Flux follows.")
    path: str = Field(
        default="kubernetes/rpi-cluster/apps/dynamic",
        description="Directory holding one folder per app and the parent kustomization.yaml.",
    )
    username: str = Field(default="relay", description="User for HTTPS auth.")
    token_file: SecretFile | None = Field(default=None, description="File with the HTTPS token.")
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
    push_attempts: int = Field(
        default=8,
        ge=1,
        description="Pushes tried per batch when the remote moved meanwhile (fetch, re-apply, "
        "push again with back-off) before the batch fails with git_push_failed.",
    )
    command_timeout: float = Field(
        default=60.0, gt=0, description="Seconds one git command may take before it is killed."
    )

    _token: SecretStr | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _load_token(self) -> GitOpsSettings:
        self._token = _load(self.token_file)
        return self

    @property
    def token(self) -> SecretStr | None:
        return self._token


class BuilderSettings(_Model):
    backend: Literal["buildah", "docker", "buildkit", "none"] = Field(
        default="buildah", description="How images are built (buildah is daemonless)."
    )
    concurrency: int = Field(
        default=2, ge=1, description="Builds at once (2 suits a Raspberry Pi)."
    )
    prefetch: int = Field(
        default=64,
        ge=1,
        description="Messages the build worker takes at once (at least concurrency + 2): "
        "prebuilt images are resolved and deletions run while builds wait for a slot. Lower "
        "it when several build workers share the queue, so that one does not hold every build.",
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
    max_git_context_bytes: int = Field(
        default=256 * 1024 * 1024,
        description="Cap in bytes on a Git checkout used as a context (after removing .git).",
    )
    buildah_root: Path | None = Field(
        default=None,
        description="Directory holding buildah's storage root, run root and chosen driver "
        "(default: <tmp>/relay-buildah); base images stay cached there between builds.",
    )
    workdir: Path | None = Field(
        default=None,
        description="Where each build's private directory (context, auth file) is made and "
        "removed afterwards (default: the system temp directory).",
    )


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
    run_as_user: int | None = Field(
        default=65532,
        ge=1,
        description="runAsUser/runAsGroup of app pods, so images without a USER still run under "
        "runAsNonRoot; None keeps the image's own (numeric, non-root) USER.",
    )
    kustomization_timeout: str = Field(default="3m", description="Flux Kustomization spec.timeout.")
    kustomization_interval: str = Field(
        default="10m", description="Flux Kustomization spec.interval."
    )


class CallbackSettings(_Model):
    header_name: str | None = Field(
        default=None, description="Static header sent with every callback (n8n Wait node auth)."
    )
    header_value_file: SecretFile | None = Field(default=None, description="File with its value.")
    timeout: float = Field(default=10.0, description="Seconds per callback attempt.")
    retry_schedule: list[float] = Field(
        default=[0.5, 1.0, 2.0, 4.0],
        description="Seconds between in-process retries of a callback before the bus's delayed "
        "retries take over (Retry-After from the receiver wins when longer).",
    )

    _header_value: SecretStr | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _load_value(self) -> CallbackSettings:
        if (self.header_name is None) != (self.header_value_file is None):
            raise ValueError("header_name and header_value_file go together")
        self._header_value = _load(self.header_value_file)
        return self

    @property
    def header_value(self) -> SecretStr | None:
        return self._header_value


class DeploySettings(_Model):
    secret_file: SecretFile | None = Field(default=None, description="Secret of signed deploys.")
    secret_files: list[SecretFile] = Field(
        default_factory=list, description="Extra live secrets (rotation)."
    )
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

    _secrets: list[SecretStr] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _load_secrets(self) -> DeploySettings:
        files = [*([self.secret_file] if self.secret_file else []), *self.secret_files]
        self._secrets = [read_secret_file(f) for f in files]
        return self

    @property
    def secrets(self) -> list[SecretStr]:
        """Live deploy secrets; empty means /deploy is disabled."""
        return self._secrets


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
        for private in (value.__pydantic_private__ or {}).values():
            _collect_secrets(private, found)
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
