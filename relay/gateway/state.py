"""The gateway's per-application state, built once from settings in ``create_app``.

Secrets are copied out of their ``SecretStr`` here, once, into the receivers the verifiers use;
an empty one stops the gateway from starting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from relay.bus import Bus
from relay.errors import ConfigError
from relay.gateway.errors import RateLimited
from relay.gateway.limits import IPNetwork, RateLimiter, client_ip, parse_networks
from relay.gateway.memory import SignatureLedger, Window
from relay.gateway.metrics import Metrics
from relay.logging import redactor
from relay.receivers import PROVIDERS, Receiver
from relay.settings import RateLimitSettings, ReceiverSettings, Settings


@dataclass(kw_only=True)
class GatewayState:
    settings: Settings
    bus: Bus
    receivers: dict[str, Receiver]
    deploy_secrets: tuple[str, ...]
    trusted: tuple[IPNetwork, ...]
    limiters: dict[str, RateLimiter]
    deliveries: Window
    deploys: Window
    signatures: SignatureLedger
    metrics: Metrics = field(default_factory=Metrics)

    def limit(self, request: web.Request, scope: str) -> str:
        """Take a token for the client in ``scope``; raises ``RateLimited``. Returns the IP."""
        ip = client_ip(request.remote, request.headers, self.trusted)
        wait = self.limiters[scope].take(ip)
        if wait:
            raise RateLimited(f"too many requests from {ip}; retry later", retry_after=wait)
        return ip


STATE: web.AppKey[GatewayState] = web.AppKey("gateway_state", GatewayState)


def _secrets(owner: str, values: list[object]) -> tuple[str, ...]:
    plain = tuple(getattr(v, "get_secret_value", lambda: "")() for v in values)
    if any(not s.strip() for s in plain):
        raise ConfigError(f"{owner} has an empty secret; the gateway will not start without it")
    return plain


def _receiver(config: ReceiverSettings) -> Receiver:
    if config.type not in PROVIDERS:
        raise ConfigError(f"receiver {config.name}: unknown type {config.type!r}")
    secrets = _secrets(f"receiver {config.name}", list(config.secrets))
    if not secrets:
        raise ConfigError(f"receiver {config.name} has no secret; set secret_file")
    return Receiver(
        name=config.name,
        type=config.type,
        secrets=secrets,
        events=tuple(config.events) if config.events is not None else None,
        branches=tuple(config.branches) if config.branches is not None else None,
    )


def _limiter(config: RateLimitSettings) -> RateLimiter:
    return RateLimiter(requests=config.requests, per_seconds=config.per_seconds)


def build_state(settings: Settings, bus: Bus) -> GatewayState:
    receivers = {r.name: _receiver(r) for r in settings.receivers}
    deploy_secrets = _secrets("deploy", list(settings.deploy.secrets))
    redactor().add([s for r in receivers.values() for s in r.secrets] + list(deploy_secrets))
    limiters = {
        f"hook:{r.name}": _limiter(r.rate_limit or settings.http.rate_limit)
        for r in settings.receivers
    }
    limiters["deploy"] = _limiter(settings.deploy.rate_limit)
    return GatewayState(
        settings=settings,
        bus=bus,
        receivers=receivers,
        deploy_secrets=deploy_secrets,
        trusted=parse_networks(settings.http.trusted_proxies),
        limiters=limiters,
        deliveries=Window(settings.http.dedupe_window),
        deploys=Window(settings.http.dedupe_window),
        signatures=SignatureLedger(settings.deploy.signature_window),
    )
