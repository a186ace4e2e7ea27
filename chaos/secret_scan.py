"""Scenario 4: every log line of every process of a run searched for every secret.

The secrets are the run's webhook secrets (two live GitHub secrets, a GitLab token), the deploy
secret, the registry password, the Git token, a private broker's password, each also as base64,
and the ``Basic`` credentials (``user:password`` in base64) of the registry and the Git server.
The logs are the relay's processes' (gateway, every worker, ``relay dlq``), the registry's,
nginx's and fcgiwrap's, and a private RabbitMQ node's. A planted secret in a scratch file shows
the scan itself finds what it looks for.

Run alone (``python -m chaos.secret_scan``) it scans a short kill run; ``python -m chaos`` scans
every scenario's logs.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from chaos.checks import scan_for_secrets
from chaos.kill_workers import Options, run
from chaos.report import Result, print_result


def scan(results: list[Result]) -> Result:
    started = time.monotonic()
    result = Result("secret_scan", "every log line searched for every secret")
    secrets = {f"{r.scenario}/{label}": v for r in results for label, v in r.secrets.items()}
    files = sorted({f for r in results for f in r.log_files if f.is_file()})
    found = scan_for_secrets(files, secrets)
    size = sum(f.stat().st_size for f in files)
    result.facts.update(
        {
            "log files": f"{found.files} ({', '.join(sorted({f.name for f in files}))})",
            "lines": found.lines,
            "bytes": size,
            "secret values searched": f"{found.secrets} (raw, base64 and Basic forms)",
        }
    )
    where = [f"{Path(path).name}:{line} holds {label}" for path, label, line in found.hits]
    result.check(
        "no secret in any log line",
        bool(files) and not found.hits,
        f"{found.lines} lines of {found.files} files, {len(found.hits)} hits"
        + (f": {where[:10]}" if where else ""),
    )
    result.check("the scan finds a planted secret", _canary(secrets), "one planted, one found")
    result.seconds = time.monotonic() - started
    return result


def _canary(secrets: dict[str, str]) -> bool:
    if not secrets:
        return False
    label, value = next(iter(secrets.items()))
    with tempfile.TemporaryDirectory() as tmp:
        planted = Path(tmp) / "planted.log"
        planted.write_text(f"line one\nsomething {value} leaked\n")
        hits = scan_for_secrets([planted], {label: value}).hits
    return len(hits) == 1


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="relay-chaos-scan-"))
    try:
        ran = asyncio.run(run(root, Options(deploys=40, apps=14)))
        result = scan([ran])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_result(ran)
    print_result(result)
    return 0 if ran.ok and result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
