"""Small building blocks for the test Kubernetes API server: processes, ports, PKI, HTTP.

Kept apart from `kubeapi` so that the server class reads as a lifecycle and nothing else.
Everything here binds to 127.0.0.1 only and uses the standard library plus the `openssl` CLI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(what: str, check: Callable[[], bool], *, timeout: float, interval: float = 0.1) -> None:
    """Poll `check` until it returns True; raise TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Process:
    """One child in its own session (process group), output appended to a log file."""

    def __init__(self, name: str, argv: Sequence[str], *, log: Path, cwd: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self._log_handle = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self._log_handle.write(f"\n=== start {self.name}: {' '.join(self.argv)}\n".encode())
        self._log_handle.flush()
        self._popen = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ensure_alive(self) -> None:
        """Raise with the log's tail if the process has exited."""
        if self._popen is not None and self._popen.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self._popen.returncode}; log {self.log}:\n{log_tail(self.log)}"
            )

    def stop(self, *, timeout: float = 15.0) -> None:
        """SIGTERM the whole process group, then SIGKILL it after `timeout`; always reaped."""
        popen, self._popen = self._popen, None
        if popen is not None:
            self._signal_group(popen.pid, signal.SIGTERM)
            try:
                popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(popen.pid, signal.SIGKILL)
                popen.wait(timeout=timeout)
            # Children left in the group (none expected) go too.
            self._signal_group(popen.pid, signal.SIGKILL)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass(frozen=True)
class Pki:
    """Files of a throw-away CA, a serving certificate for 127.0.0.1 and a service-account key."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    sa_key: Path
    sa_pub: Path

    @classmethod
    def create(cls, directory: Path) -> Pki:
        directory.mkdir(parents=True, exist_ok=True)
        pki = cls(*(directory / n for n in ("ca.crt", "ca.key", "server.crt", "server.key", "sa.key", "sa.pub")))
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        _openssl(
            "req",
            "-x509",
            *ec,
            "-keyout",
            pki.ca_key,
            "-out",
            pki.ca_cert,
            "-days",
            "3650",
            "-subj",
            "/CN=relay-test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        )
        csr = directory / "server.csr"
        _openssl("req", *ec, "-keyout", pki.server_key, "-out", csr, "-subj", "/CN=kube-apiserver")
        ext = directory / "server.ext"
        ext.write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "basicConstraints=critical,CA:FALSE\n"
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            pki.ca_cert,
            "-CAkey",
            pki.ca_key,
            "-CAcreateserial",
            "-out",
            pki.server_cert,
            "-days",
            "365",
            "-extfile",
            ext,
        )
        _openssl("genrsa", "-out", pki.sa_key, "2048")
        _openssl("rsa", "-in", pki.sa_key, "-pubout", "-out", pki.sa_pub)
        for key in (pki.ca_key, pki.server_key, pki.sa_key):
            key.chmod(0o600)
        return pki


def _openssl(*args: object) -> None:
    proc = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


class HttpClient:
    """Just enough HTTPS for tests: JSON in, (status, JSON or text) out, a bearer token."""

    def __init__(self, base_url: str, ca_file: Path) -> None:
        self.base_url = base_url
        self.context = ssl.create_default_context(cafile=str(ca_file))

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 10.0,
    ) -> tuple[int, Any]:
        response = self.open(method, path, token=token, body=body, content_type=content_type, timeout=timeout)
        with response:
            return response.status, _decode(response.read())

    def open(
        self,
        method: str,
        path: str,
        *,
        token: str | None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 10.0,
    ) -> Any:
        """The open response (an HTTPError is returned, not raised); the caller closes it."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            return urllib.request.urlopen(request, timeout=timeout, context=self.context)
        except urllib.error.HTTPError as error:
            return error


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


def post_json(url: str, body: Any, *, timeout: float = 10.0) -> Any:
    """POST JSON over plain HTTP (etcd's gRPC gateway on loopback); raise on HTTP errors."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())
