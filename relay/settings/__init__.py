"""Settings: one object, loaded once in the entry point and passed explicitly.

Sources, highest priority first: ``RELAY_…`` environment variables (nested keys joined by
``__``, e.g. ``RELAY_BROKER__URL``), then the YAML file named by ``--config`` / ``RELAY_CONFIG``,
then the defaults in each section's module. Secrets are never accepted on argv: each
secret-bearing model takes a ``*_file`` path (a mounted Kubernetes Secret) and reads it into a
``SecretStr`` while the settings validate, so a missing or empty file is a configuration error
that names its key.

One module per section: ``broker``, ``gateway`` (``http`` and rate limits), ``receivers``,
``deploy`` (registry, GitOps, builder, manifests, callbacks), ``kubernetes``, ``notify``, ``log``;
``secret_files`` reads secrets, ``root`` holds ``Settings`` and ``loading`` reads YAML and the
environment into it. Import every name from here, not from those modules.
"""

from __future__ import annotations

from relay.settings.broker import BrokerSettings, RetrySettings
from relay.settings.deploy import (
    BuilderSettings,
    CallbackSettings,
    DeploySettings,
    GitOpsSettings,
    ManifestSettings,
    RegistrySettings,
    ResourceSettings,
)
from relay.settings.gateway import HttpSettings, RateLimitSettings
from relay.settings.kubernetes import KubernetesSettings
from relay.settings.loading import config_path, load_settings
from relay.settings.log import LogSettings
from relay.settings.notify import NotifySettings, SinkSettings
from relay.settings.receivers import ReceiverSettings, ReceiverType, ReconcileTarget
from relay.settings.root import Settings
from relay.settings.secret_files import SecretFile, read_secret_file

__all__ = [
    "BrokerSettings",
    "BuilderSettings",
    "CallbackSettings",
    "DeploySettings",
    "GitOpsSettings",
    "HttpSettings",
    "KubernetesSettings",
    "LogSettings",
    "ManifestSettings",
    "NotifySettings",
    "RateLimitSettings",
    "ReceiverSettings",
    "ReceiverType",
    "ReconcileTarget",
    "RegistrySettings",
    "ResourceSettings",
    "RetrySettings",
    "SecretFile",
    "Settings",
    "SinkSettings",
    "config_path",
    "load_settings",
    "read_secret_file",
]
