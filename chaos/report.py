"""Results of the fault runs: printed for a person and written to RELIABILITY.md ("Chaos").

The section runs from its ``## Chaos`` heading to the next level-two heading, so another
section of the same file (the fuzzing one) is never touched: it is replaced when present and
appended otherwise.
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chaos.checks import Check

HEADING = "## Chaos"
FINDINGS = """\
### What these runs found (fixed)

- A build worker killed after publishing `image.pushed` but before its ack publishes it again on
  redelivery; when a newer version of the app had been committed in between, the commit worker
  failed the first deployment as `superseded` after it had been reported committed. A redelivered
  deploy that a commit already names is now answered with that commit (commit c0e19bd).
- `relay dlq replay ID` did nothing while the worker that dead-lettered the message was still
  running (the usual case): the worker remembered the given-up event as handled and acked the
  replay. 35 of 35 replays after an outage were no-ops. Only completed work is remembered now
  (commit 35cc950).
- After a broker restart the gateway answered 202 again, but `GET /deployments/{id}` did not know
  460 of 724 deployments accepted since: the status feed's history reader waited forever on a
  consumer the robust connection does not restore (`relay tail` too). Readers now end with
  `BrokerUnavailable` when the connection drops and are read again (commit f623607).
- In 2 of 5 broker restarts, 1 and 10 events answered 202 (confirmed, and present in a quorum
  queue) were missing from the history stream: they were published in the moment after the
  reconnect, before every channel was restored, and RabbitMQ 3.10 confirmed them for a stream whose
  leader was not back. The bus now counts as connected only once every channel is restored
  (commit c7a9511); none missing in 9 runs since.
- With the Kubernetes API server restarted under deploys, 6 deploys the reconcile worker was
  retrying through the outage were failed for good as `forbidden` the moment it came back: a
  restarted kube-apiserver answers 403 to everyone for up to about 60 ms (measured over 3
  restarts; its RBAC cache is empty), and the direct read of a new app's Kustomization took that
  as final. That read now believes a refusal only once it has lasted 5 s, as the patcher and
  the informers already did (commit de189e2).
- After that restart, informers on quiet collections (no pods; a Deployment that does not change)
  kept reporting the outage, as a watch accepted again without an event did not end it: a rollout
  timing out later blamed "Kubernetes API not answering". And every informer's "watch
  interrupted/resumed" line carried the ids of the deploy that had happened to start it. A watch
  accepted again now ends the outage, and informers log in a context of their own (commit 7e844dd).

Two `relay dlq` commands run at the same moment could make one of them miss a dead letter (each
took the whole queue unacknowledged while it looked); readers now take turns through an exclusive
lock queue (tests/bus/test_dead_letter_readers.py). Left as it is:
One broker restart run (of about 15) saw a single HTTP 500 from the gateway; its logs were not
kept and it did not come back. A failed `make chaos` now keeps the run's logs and says where.
A deploy that `relay dlq replay` brought to `deploy.ready` answered `failed` on
`GET /deployments/{id}` (the tracker never left a terminal status); a failure is now left for
stage events newer than it, so the status API follows the replay to `ready`.
"""
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    scenario: str
    title: str
    checks: list[Check] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    log_files: list[Path] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))


_T0 = time.monotonic()


def say(text: str) -> None:
    """A progress line for whoever watches the run."""
    print(f"[chaos +{time.monotonic() - _T0:6.1f}s] {text}", flush=True)


def run_alone(
    scenario: Callable[[Path], Coroutine[Any, Any, Result]],
    *,
    prefix: str,
    keep: Path | None = None,
) -> int:
    """``python -m chaos.<name>``: one scenario in a directory of its own, its result printed;
    the directory is removed after a pass unless ``keep`` names it, kept after a failure."""
    root = keep or Path(tempfile.mkdtemp(prefix=prefix))
    root.mkdir(parents=True, exist_ok=True)
    result: Result | None = None
    try:
        result = asyncio.run(scenario(root))
    finally:
        if keep is None and result is not None and result.ok:
            shutil.rmtree(root, ignore_errors=True)
        else:
            say(f"the run's files (logs) are kept in {root}")
    print_result(result)
    return 0 if result.ok else 1


def print_result(result: Result) -> None:
    verdict = "PASS" if result.ok else "FAIL"
    print(
        f"\n=== {result.scenario}: {result.title}: {verdict} ({result.seconds:.1f} s)", flush=True
    )
    for name, value in result.facts.items():
        print(f"  {name}: {value}")
    for check in result.checks:
        print(f"  [{'ok' if check.ok else 'FAILED'}] {check.name}: {check.detail}")
    for note in result.notes:
        print(f"  note: {note}")


def machine() -> dict[str, str]:
    rabbit = _command(["rabbitmqctl", "-q", "version"]) or "?"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "uname": " ".join(part for part in platform.uname() if part),
        "nproc": str(os.cpu_count()),
        "memory": _memory(),
        "python": platform.python_version(),
        "rabbitmq": rabbit.strip(),
        "commit": (
            _command(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]) or "?"
        ).strip(),
    }


def _command(argv: list[str]) -> str | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def _memory() -> str:
    try:
        first = Path("/proc/meminfo").read_text().splitlines()[0]
    except OSError:
        return "?"
    kib = int(first.split()[1])
    return f"{kib / 1024 / 1024:.1f} GiB"


def render(results: list[Result], facts: dict[str, str]) -> str:
    passed = sum(r.ok for r in results)
    lines = [
        HEADING,
        "",
        "Written by `make chaos` (`python -m chaos`); each scenario also runs alone as "
        "`python -m chaos.<name>`. Loopback only, bounded, everything it started is stopped.",
        "",
        f"Last run: {facts['date']}, commit {facts['commit']}: **{passed} of {len(results)} "
        "scenarios held every invariant.**",
        "",
        f"Machine: `{facts['uname']}`; {facts['nproc']} CPUs (`nproc`), {facts['memory']} memory; "
        f"Python {facts['python']}; RabbitMQ {facts['rabbitmq']}. The CPUs are shared with "
        "other work, so timings are indicative.",
        "",
    ]
    for result in results:
        lines += _render_one(result)
    lines.append(FINDINGS)
    return "\n".join(lines).rstrip() + "\n"


def _render_one(result: Result) -> list[str]:
    verdict = "held" if result.ok else "**FAILED**"
    lines = [
        f"### {result.title} (`python -m chaos.{result.scenario}`): {verdict}",
        "",
        f"Took {result.seconds:.1f} s.",
        "",
        "| fact | value |",
        "|---|---|",
    ]
    lines += [f"| {name} | {_cell(value)} |" for name, value in result.facts.items()]
    lines += ["", "Invariants:", ""]
    lines += [f"- {'✅' if c.ok else '❌'} {c.name}: {c.detail}" for c in result.checks]
    if result.notes:
        lines += ["", *[f"- {note}" for note in result.notes]]
    return [*lines, ""]


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def write_section(path: Path, section: str) -> None:
    """Replace the ``## Chaos`` section of ``path`` (or append it), leaving the rest alone."""
    text = path.read_text() if path.exists() else "# Reliability\n\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## (?!#)|\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n")
