"""docker-compose.yml is a valid Compose file and the stack it describes holds together.

No Docker engine runs here: the file is validated against the Compose specification's JSON
schema (shared/schemas/compose-spec.json), and the rules the documentation promises are checked
on it: every long-running service has a healthcheck, every dependency waits on a condition,
workers scale (no container_name, no host ports), every file it mounts exists or is made by
compose/init-secrets.sh, which is run here for real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import bcrypt
import jsonschema
import pytest
import yaml

WORKERS = {"build", "commit", "reconcile", "watch", "notify"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def _services(compose: dict[str, Any]) -> dict[str, Any]:
    services: dict[str, Any] = compose["services"]
    return services


def test_the_compose_file_is_valid(compose: dict[str, Any], shared: Path) -> None:
    schema = json.loads((shared / "schemas" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(compose)


def test_the_schema_check_is_not_a_formality(compose: dict[str, Any], shared: Path) -> None:
    schema = json.loads((shared / "schemas" / "compose-spec.json").read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["gateway"]["healthcheck"]["intervall"] = "5s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(broken)


def test_every_process_runs_as_its_own_service(compose: dict[str, Any]) -> None:
    services = _services(compose)
    assert services["gateway"]["command"] == ["gateway"]
    for worker in WORKERS:
        assert services[worker]["command"] == ["worker", worker]
    assert {"rabbitmq", "registry", "git", "buildkitd"} <= set(services)


def test_every_service_is_healthchecked_and_waited_for(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dep, how in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert how.get("condition") in CONDITIONS, f"{name} -> {dep} has no condition"
            if "healthcheck" in services[dep]:
                assert how["condition"] == "service_healthy", f"{name} -> {dep}"
    for name in ["gateway", *WORKERS]:
        assert services[name]["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}
    assert services["build"]["depends_on"]["buildkitd"] == {"condition": "service_healthy"}
    assert services["commit"]["depends_on"]["git"] == {"condition": "service_healthy"}


def test_workers_scale(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name, service in services.items():
        assert "container_name" not in service, name
    for worker in WORKERS:
        assert "ports" not in services[worker], f"{worker} would not scale with a host port"


def test_relay_containers_are_locked_down(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name in ["gateway", *WORKERS]:
        service = services[name]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["environment"]["RELAY_HTTP__HOST"] == "0.0.0.0", name
        # the gateway listens on http.port, a worker on http.metrics_port: the healthcheck's 8099
        assert service["environment"]["RELAY_HTTP__PORT"] == "8099", name
        assert service["environment"]["RELAY_HTTP__METRICS_PORT"] == "8099", name
        assert "127.0.0.1:8099/healthz" in " ".join(service["healthcheck"]["test"]), name
        assert service["environment"]["RELAY_BROKER__URL"].startswith("amqp://"), name
    assert services["build"]["build"]["dockerfile"] == "Dockerfile.builder"


def test_every_mounted_file_exists(compose: dict[str, Any], repo: Path) -> None:
    for name, service in _services(compose).items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (repo / source).exists(), f"{name}: {source}"
        build = service.get("build")
        if build:
            context = repo / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
    for config in compose["configs"].values():
        assert (repo / config["file"]).is_file()
    tomllib.loads((repo / "compose" / "buildkit" / "buildkitd.toml").read_text())
    declared = set(compose["volumes"])
    used = {v.split(":", 1)[0] for s in _services(compose).values() for v in s.get("volumes", [])}
    assert declared == {v for v in used if not v.startswith("./")}


def test_init_secrets_makes_every_secret(
    compose: dict[str, Any], repo: Path, tmp_path: Path
) -> None:
    shutil.copytree(repo / "compose", tmp_path / "compose")
    shutil.copy(repo / ".env.example", tmp_path / ".env.example")
    script = tmp_path / "compose" / "init-secrets.sh"
    # python3 here is the test's own, which has bcrypt, when htpasswd is not installed.
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["bash", str(script)], check=True, env=env, capture_output=True, timeout=60)
    for secret in compose["secrets"].values():
        path = tmp_path / secret["file"]
        assert path.is_file() and path.read_text().strip(), secret["file"]
        assert path.stat().st_mode & 0o777 == 0o644
    secrets = tmp_path / "compose" / "secrets"
    assert secrets.stat().st_mode & 0o777 == 0o700
    user, hashed = (secrets / "registry_htpasswd").read_text().split()[0].split(":", 1)
    password = (secrets / "registry_password").read_text().strip()
    assert user == "relay" and bcrypt.checkpw(password.encode(), hashed.encode())
    dotenv = (tmp_path / ".env").read_text()
    assert "RABBITMQ_PASSWORD=change-me" not in dotenv and "RABBITMQ_PASSWORD=" in dotenv
    before = {p.name: p.read_text() for p in secrets.iterdir()}
    subprocess.run(["bash", str(script)], check=True, env=env, capture_output=True, timeout=60)
    assert before == {p.name: p.read_text() for p in secrets.iterdir()}  # kept, not regenerated


def test_the_env_example_covers_every_variable(compose: dict[str, Any], repo: Path) -> None:
    import re

    text = (repo / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    example = dict(
        line.split("=", 1)
        for line in (repo / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert used == set(example)
    assert yaml.safe_load(text) == compose
