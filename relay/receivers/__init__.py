"""Webhook receivers, one module per provider with the same shape (see ``base``)."""

from __future__ import annotations

from relay.receivers import bitbucket, flux, generic, gitea, github, gitlab, registry
from relay.receivers.base import Ignored, ParsedEvent, PayloadError, Provider, Receiver

PROVIDERS: dict[str, Provider] = {
    "github": github.PROVIDER,
    "gitlab": gitlab.PROVIDER,
    "gitea": gitea.GITEA,
    "forgejo": gitea.FORGEJO,
    "bitbucket": bitbucket.CLOUD,
    "bitbucket-server": bitbucket.SERVER,
    "generic-hmac": generic.GENERIC_HMAC,
    "generic": generic.GENERIC,
    "flux": flux.PROVIDER,
    "registry": registry.PROVIDER,
}

__all__ = ["PROVIDERS", "Ignored", "ParsedEvent", "PayloadError", "Provider", "Receiver"]
