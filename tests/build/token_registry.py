"""A real registry with token auth: ``docker-registry`` (``auth.token``) plus a token service.

Distribution's token auth has the registry verify JWTs that a separate service issues; this is
that service, in-process (aiohttp on loopback): it checks Basic credentials, grants the scope it
is asked for, and signs an RS256 JWT whose ``x5c`` header carries a self-signed certificate the
registry trusts (``rootcertbundle``). The registry serves storage shared with a Basic-auth
``Registry`` from ``tests.support``, so test images are pushed there and read here.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.support._http import http_status
from tests.support._procs import (
    LOOPBACK,
    GroupProcess,
    clean_env,
    free_port,
    require_binary,
    wait_for,
)

SERVICE = "relay-test-registry"
ISSUER = "relay-test-token-issuer"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """Issues registry tokens for one user; counts the tokens it gave out."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.cert = _self_signed(self.key)
        self.issued: list[str] = []  # the scopes of the tokens issued, in order
        self.refused = 0
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def realm(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/token"

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _token(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            self.refused += 1
            return web.json_response({"details": "bad credentials"}, status=401)
        scope = request.query.get("scope", "")
        self.issued.append(scope)
        return web.json_response({"token": self.sign(scope), "expires_in": 300})

    def sign(self, scope: str) -> str:
        header = {
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": self.username,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": _access(scope),
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"


def _access(scope: str) -> list[dict[str, object]]:
    grants: list[dict[str, object]] = []
    for item in scope.split():
        kind, _, rest = item.partition(":")
        name, _, actions = rest.rpartition(":")
        grants.append({"type": kind, "name": name, "actions": actions.split(",")})
    return grants


def _self_signed(key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


class TokenRegistry:
    """``docker-registry serve`` with ``auth.token`` over an existing storage directory."""

    def __init__(self, base_dir: Path, storage_dir: Path, tokens: TokenService) -> None:
        self.base_dir = base_dir
        self.port = free_port()
        self.tokens = tokens
        base_dir.mkdir(parents=True, exist_ok=True)
        (base_dir / "token-ca.pem").write_bytes(tokens.cert_pem())
        config = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(storage_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": f"{LOOPBACK}:{self.port}", "secret": secrets.token_hex(16)},
            "auth": {
                "token": {
                    "realm": tokens.realm,
                    "service": SERVICE,
                    "issuer": ISSUER,
                    "rootcertbundle": str(base_dir / "token-ca.pem"),
                }
            },
        }
        (base_dir / "config.yml").write_text(json.dumps(config))
        self._proc = GroupProcess(
            "docker-registry-token",
            [require_binary("docker-registry"), "serve", str(base_dir / "config.yml")],
            base_dir / "registry.log",
            env=clean_env(drop_prefixes=("REGISTRY_", "OTEL_")),
        )

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> None:
        self._proc.start()
        wait_for(
            lambda: http_status(f"http://{self.host}/v2/") == 401,
            timeout=15,
            what="token-auth registry",
            alive=self._proc.death_note,
        )

    def stop(self) -> None:
        self._proc.stop()
