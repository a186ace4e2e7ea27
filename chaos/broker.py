"""RabbitMQ for a fault run: a private vhost on the shared server, or a private throw-away node.

The shared server (``RELAY_TEST_AMQP_URL``, 127.0.0.1:5672) is never stopped: a run that restarts
the broker starts a node of its own (own node name, ports, data, logs, HOME and Erlang cookie,
plugins off, every listener on loopback) and shuts down only that node (``rabbitmqctl -n NODE``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
SHARED_URL = os.environ.get("RELAY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
CTL_TIMEOUT = 60.0


async def _run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"{argv[0]} {argv[1:3]} took longer than {timeout:g}s") from None
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} {' '.join(argv[1:3])} failed: {text[-500:]}")
    return text


class SharedVhost:
    """A vhost of this run on the shared server, deleted at the end."""

    def __init__(self, prefix: str = "relay-chaos") -> None:
        self.name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        parts = urlsplit(SHARED_URL)
        self.user = parts.username or "guest"
        self.url = urlunsplit(parts._replace(path="/" + quote(self.name, safe="")))

    async def create(self) -> SharedVhost:
        await _run(["rabbitmqctl", "-q", "add_vhost", self.name], timeout=CTL_TIMEOUT)
        perms = ["set_permissions", "-p", self.name, self.user, ".*", ".*", ".*"]
        await _run(["rabbitmqctl", "-q", *perms], timeout=CTL_TIMEOUT)
        return self

    async def delete(self) -> None:
        await _run(["rabbitmqctl", "-q", "delete_vhost", self.name], timeout=CTL_TIMEOUT)


def _free_low_port() -> int:
    """A free port below the ephemeral range: RabbitMQ's start-up check refuses a dist port an
    outgoing connection happens to use (seen: ``dist_port_already_used … not_erlang``)."""
    for _ in range(200):
        port = 20000 + secrets.randbelow(12000)
        if all(_port_free(p) for p in (port, port + 1)):
            return port
    raise RuntimeError("no free port pair found between 20000 and 32000")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class PrivateNode:
    """A throw-away RabbitMQ node of this run: ``start``, ``shutdown``, ``start`` again."""

    def __init__(self, base: Path) -> None:
        self.base = base
        suffix = uuid.uuid4().hex[:8]
        self.node = f"relay-chaos-{suffix}@localhost"
        self.port = _free_low_port()
        self.dist_port = self.port + 1
        self.user = "relay-chaos"
        self.password = secrets.token_urlsafe(18)
        self.log_dir = base / "log"
        self.url = f"amqp://{self.user}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/"
        self.started = False
        self.accepting_at = 0.0  # wall clock when the last start took its first connection
        self._write_files()

    def _write_files(self) -> None:
        (self.base / "home").mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            "log.console = false\nlog.file.level = info\n"
        )
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "env.conf").write_text(
            "ERL_EPMD_ADDRESS=127.0.0.1\n"
            'SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"\n'
        )

    def env(self) -> dict[str, str]:
        b = self.base
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        return {
            **keep,
            "HOME": str(b / "home"),  # its own Erlang cookie, shared with our rabbitmqctl only
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CONF_ENV_FILE": str(b / "env.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(b / "mnesia"),
            "RABBITMQ_PID_FILE": str(b / "node.pid"),
            "RABBITMQ_LOG_BASE": str(self.log_dir),
            "RABBITMQ_CONFIG_FILE": str(b / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(b / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(b / "enabled_plugins"),
        }

    async def ctl(self, *args: str, timeout: float = CTL_TIMEOUT) -> str:
        argv = [str(RABBIT_BIN / "rabbitmqctl"), "-n", self.node, "-q", *args]
        return await _run(argv, env=self.env(), timeout=timeout)

    async def start(self, timeout: float = 60.0) -> float:
        """Start the node and wait until it takes AMQP connections; returns the seconds taken."""
        started = time.monotonic()
        await _run([str(RABBIT_BIN / "rabbitmq-server"), "-detached"], env=self.env(), timeout=30)
        self.started = True
        while not await _accepts(self.port):
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"the private node {self.node} did not start in {timeout:g}s")
            await asyncio.sleep(0.1)
        self.accepting_at = time.time()
        await self.ctl("await_startup", timeout=timeout)
        if not await self._has_user():
            await self._add_user()
        return time.monotonic() - started

    async def _has_user(self) -> bool:
        return self.user in (await self.ctl("list_users", "--no-table-headers")).split()

    async def _add_user(self) -> None:
        """A user with a random password, given on stdin (never on argv), the only one allowed."""
        argv = [str(RABBIT_BIN / "rabbitmqctl"), "-n", self.node, "-q", "add_user", self.user]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env(),
        )
        out, _ = await asyncio.wait_for(proc.communicate(self.password.encode() + b"\n"), 60)
        if proc.returncode != 0:
            raise RuntimeError(f"add_user failed: {out.decode(errors='replace')[-300:]}")
        await self.ctl("set_permissions", "-p", "/", self.user, ".*", ".*", ".*")
        await self.ctl("delete_user", "guest")

    async def shutdown(self, timeout: float = 60.0) -> float:
        """``rabbitmqctl -n NODE shutdown`` (waits for the VM to exit); returns the seconds."""
        started = time.monotonic()
        if self.started:
            await self.ctl("shutdown", timeout=timeout)
            self.started = False
        return time.monotonic() - started


async def _accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def epmd_names() -> str | None:
    """``epmd -names`` (the Erlang nodes registered here), or None when epmd is not running."""
    try:
        return await _run(["epmd", "-names"], timeout=10)
    except (RuntimeError, OSError):
        return None


async def stop_epmd_if_idle(*, was_running: bool) -> None:
    """A node start leaves epmd behind: stop it only if this run started it and no node is left
    registered (the shared server's node needs it)."""
    if was_running:
        return
    names = await epmd_names()
    if names is not None and "name " not in names:
        await _run(["epmd", "-kill"], timeout=10)
