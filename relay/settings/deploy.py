"""``deploy``: the /deploy pipeline: its secrets, registry, GitOps repository, builds, manifests
and callbacks."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, model_validator

from relay.settings.base import SettingsModel
from relay.settings.gateway import RateLimitSettings
from relay.settings.secret_files import SecretFile, read_optional_secret, read_secret_file


class RegistrySettings(SettingsModel):
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
        self._password = read_optional_secret(self.password_file)
        return self

    @property
    def password(self) -> SecretStr | None:
        return self._password


class GitOpsSettings(SettingsModel):
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
        self._token = read_optional_secret(self.token_file)
        return self

    @property
    def token(self) -> SecretStr | None:
        return self._token


class BuilderSettings(SettingsModel):
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


class ResourceSettings(SettingsModel):
    cpu_request: str = Field(default="100m", description="Container CPU request.")
    memory_request: str = Field(default="128Mi", description="Container memory request.")
    cpu_limit: str = Field(default="500m", description="Container CPU limit.")
    memory_limit: str = Field(default="512Mi", description="Container memory limit.")


class ManifestSettings(SettingsModel):
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


class CallbackSettings(SettingsModel):
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
        self._header_value = read_optional_secret(self.header_value_file)
        return self

    @property
    def header_value(self) -> SecretStr | None:
        return self._header_value


class DeploySettings(SettingsModel):
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
