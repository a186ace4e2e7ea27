"""``scripts/setup-system.sh``: RabbitMQ's health check, and the restart when it fails.

Sourced, the script only defines its functions. The health check runs against the live node (it
adds and deletes one vhost of its own). The restart path never touches the live node: stand-ins
for ``rabbitmqctl``, ``rabbitmq-server``, ``rabbitmq-diagnostics`` and ``pgrep`` come first on
PATH, ``kill`` and ``amqp_answers`` are shell functions, and all of them log their calls. The
process ids the stand-in ``pgrep`` gives are above the kernel's ``pid_max``.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "setup-system.sh"
FAKE_PIDS = ("4194305", "4194306")  # above pid_max (at most 2**22): no process has them

PGREP = "pgrep -u rabbitmq -x beam\\.smp|epmd"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("rabbitmqctl") is None,
    reason="needs root and RabbitMQ's rabbitmqctl (scripts/setup-system.sh)",
)

# Each stand-in logs its name and arguments; $STATE/started exists once rabbitmq-server ran.
STANDINS = {
    "rabbitmqctl": """
case "$*" in
  *add_vhost*) [ -e "$STATE/started" ] && [ ! -e "$STATE/stays-broken" ] || exec sleep 30 ;;
  *" stop") exit 69 ;;
esac
""",
    "rabbitmq-server": 'touch "$STATE/started"\n',
    "rabbitmq-diagnostics": '[ -e "$STATE/started" ]\n',
    "pgrep": f'[ -e "$STATE/killed" ] && exit 1\nprintf "%s\\n" {" ".join(FAKE_PIDS)}\n',
}
FUNCTIONS = """
kill() { echo "kill $*" >>"$STATE/calls"; [ "$2" != KILL ] || touch "$STATE/killed"; }
amqp_answers() { echo amqp_answers >>"$STATE/calls"; }
"""


def _run(body: str, state: Path, *, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``body`` in bash after sourcing the script; returns (exit code, output, stand-in calls)."""
    script = f'source "{SCRIPT}"\n{body}'
    done = subprocess.run(
        ["bash", "-c", script],
        check=False,
        env={**os.environ, "STATE": str(state), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    calls = state / "calls"
    return done.returncode, done.stdout + done.stderr, calls.read_text() if calls.exists() else ""


@pytest.fixture
def standins(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STANDINS.items():
        path = bin_dir / name
        path.write_text(f'#!/bin/bash\necho "{name} $*" >>"$STATE/calls"\n{body}')
        path.chmod(0o755)
    return tmp_path


def _restart(state: Path) -> tuple[int, str, str]:
    body = f"""
PATH="{state / "bin"}:$PATH"
RABBIT_CTL_TIMEOUT=1 RABBIT_STOP_WAIT=1 RABBIT_START_TIMEOUT=5
{FUNCTIONS}
ensure_rabbit
"""
    return _run(body, state, env={"RELAY_TEST_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/"})


def test_the_health_check_passes_on_the_live_node_and_leaves_no_vhost(tmp_path: Path) -> None:
    code, out, _ = _run("parse_amqp_url; rabbit_healthy; echo $RABBIT_PROBE_VHOST", tmp_path)
    assert code == 0, out
    vhost = out.strip().splitlines()[-1]
    assert vhost.startswith("relay-healthcheck-")
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_vhosts"], check=True, capture_output=True, text=True, timeout=60
    )
    assert vhost not in listed.stdout.split()


def _steps(calls: str) -> list[str]:
    """The calls with the probe vhost named ``VHOST`` and repeats in a row (polling) made one."""
    named = re.sub(r"relay-healthcheck-\d+", "VHOST", calls)
    return [line for line, _ in itertools.groupby(named.splitlines())]


def test_a_hung_add_vhost_restarts_only_rabbitmqs_processes(standins: Path) -> None:
    code, out, calls = _restart(standins)
    assert code == 0, out
    pids = " ".join(FAKE_PIDS)
    assert _steps(calls) == [
        "amqp_answers",
        "rabbitmqctl -q add_vhost VHOST",  # hangs: timed out after RABBIT_CTL_TIMEOUT
        "rabbitmqctl -q stop",  # fails
        PGREP,
        f"kill -s TERM {pids}",
        PGREP,  # polled until RABBIT_STOP_WAIT, still there
        f"kill -s KILL {pids}",
        PGREP,  # gone
        "rabbitmq-server -detached",
        "rabbitmq-diagnostics -q ping",
        "rabbitmqctl await_startup",
        "amqp_answers",
        "rabbitmqctl -q add_vhost VHOST",
        "rabbitmqctl -q delete_vhost VHOST",
    ]
    assert "restarting the node" in out and "after the restart" in out


def test_a_node_still_stuck_after_the_restart_fails_with_a_message(standins: Path) -> None:
    (standins / "stays-broken").touch()
    code, out, calls = _restart(standins)
    assert code == 1
    assert "FAILED: RabbitMQ was restarted, but rabbitmqctl add_vhost/delete_vhost still" in out
    assert calls.count("rabbitmq-server -detached") == 1
