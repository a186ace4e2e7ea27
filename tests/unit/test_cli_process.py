"""The real ``relay`` console script: help text, and ``relay up`` serving then draining on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

RELAY = [sys.executable, "-m", "relay.cli.main"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_help_lists_every_command() -> None:
    out = subprocess.run([*RELAY, "--help"], capture_output=True, text=True, check=True).stdout
    for command in (
        "gateway",
        "worker",
        "up",
        "deploy",
        "status",
        "tail",
        "sign",
        "dlq",
        "check-config",
    ):
        assert command in out


def test_sign_prints_headers_for_stdin(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("It's a Secret to Everybody\n")
    result = subprocess.run(
        [*RELAY, "sign", "--secret-file", str(tmp_path / "secret"), "--timestamp", "1700000000"],
        input=b"Hello, World!",
        capture_output=True,
        check=True,
    )
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "X-Relay-Timestamp: 1700000000"
    assert (
        lines[1].startswith("X-Relay-Signature: sha256=")
        and len(lines[1]) == len("X-Relay-Signature: sha256=") + 64
    )


def test_up_serves_health_and_metrics_then_drains_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "RELAY_BROKER__URL": "memory://",
        "RELAY_HTTP__PORT": str(port),
        "RELAY_LOG_FORMAT": "json",
    }
    process = subprocess.Popen(
        [*RELAY, "up", "--grace", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        body = b""
        for _ in range(100):
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/readyz", timeout=1
                ) as response:
                    body = response.read()
                break
            except OSError:
                time.sleep(0.1)
        assert b'"ready": true' in body
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            assert b"relay_deploys_in_flight" in response.read()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stdout is not None
    with process.stdout:
        output = process.stdout.read().decode()
    assert "gateway listening" in output and "workers stopped" in output
