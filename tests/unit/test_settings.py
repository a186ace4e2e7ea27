"""Settings: YAML plus environment, secrets from files, and errors that name the key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.cli.main import main
from relay.errors import ConfigError
from relay.settings import load_settings


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    for name in ("gh", "gl", "deploy", "registry", "git"):
        write(tmp_path / name, f"s3cret-{name}-value\n")
    return tmp_path


def contract_config(secrets: Path) -> str:
    return f"""
broker: {{url: "amqp://guest:guest@127.0.0.1:5672/"}}
http: {{host: 127.0.0.1, port: 8099}}
receivers:
  - {{name: gh, type: github, secret_file: {secrets}/gh,
      reconcile: [{{kind: GitRepository, name: flux-system, namespace: flux-system}}]}}
  - {{name: gl, type: gitlab, secret_files: [{secrets}/gl, {secrets}/gh]}}
deploy:
  secret_file: {secrets}/deploy
  namespace: dynamic-apps
  domain: apps.example.com
  registry: {{url: "127.0.0.1:5000", username: n8n, password_file: {secrets}/registry, insecure: true}}
  gitops: {{url: "http://127.0.0.1:8418/homelab.git", branch: main,
            path: kubernetes/rpi-cluster/apps/dynamic, username: relay, token_file: {secrets}/git}}
  builder: {{backend: buildah}}
kubernetes: {{kubeconfig: /path/to/kubeconfig}}
"""


def test_contract_config_loads_with_secrets_from_files(secrets: Path) -> None:
    settings = load_settings(write(secrets / "c.yaml", contract_config(secrets)))
    gh = settings.receiver("gh")
    assert gh is not None and gh.secrets[0].get_secret_value() == "s3cret-gh-value"
    assert gh.reconcile[0].kind == "GitRepository"
    gl = settings.receiver("gl")
    assert gl is not None and len(gl.secrets) == 2
    assert settings.deploy.registry.password is not None
    assert settings.deploy.gitops.token is not None
    assert sorted(settings.secret_values()) == sorted(
        f"s3cret-{n}-value" for n in ("gh", "gl", "gh", "deploy", "registry", "git")
    )
    assert "s3cret" not in repr(settings)


def test_environment_overrides_yaml(secrets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_BROKER__URL", "memory://")
    monkeypatch.setenv("RELAY_HTTP__PORT", "9100")
    settings = load_settings(write(secrets / "c.yaml", contract_config(secrets)))
    assert settings.broker.url == "memory://"
    assert settings.http.port == 9100
    assert settings.http.host == "127.0.0.1"


def test_config_from_relay_config_variable(secrets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(secrets / "c.yaml", contract_config(secrets))
    monkeypatch.setenv("RELAY_CONFIG", str(path))
    assert load_settings().deploy.domain == "apps.example.com"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("broker: {url: [unclosed", "is not valid YAML"),
        ("brokr: {url: memory://}", "key brokr: unknown key"),
        ("http: {port: 8099, colour: red}", "key http.colour: unknown key"),
        (
            "receivers: [{name: gh, type: github, secret_file: /nonexistent/gh}]",
            "/nonexistent/gh does not exist",
        ),
        ("receivers: [{name: gh, type: github}]", "needs secret_file or secret_files"),
        ("receivers: [{name: gh, type: svn, secret_file: /dev/null}]", "key receivers.0.type"),
        ("- just\n- a list", "top level must be a mapping"),
    ],
)
def test_bad_config_is_an_error_naming_key_and_file(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert expected in message
    assert str(path) in message


def test_empty_secret_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "empty", "\n")
    path = write(
        tmp_path / "c.yaml",
        f"receivers: [{{name: gh, type: github, secret_file: {tmp_path}/empty}}]",
    )
    with pytest.raises(ConfigError, match=r"key receivers\.0\.secret_file: .*empty is empty"):
        load_settings(path)


def test_duplicate_receiver_names_are_refused(secrets: Path) -> None:
    text = f"receivers: [{{name: a, type: github, secret_file: {secrets}/gh}}, {{name: a, type: gitlab, secret_file: {secrets}/gl}}]"
    with pytest.raises(ConfigError, match="must be unique: a"):
        load_settings(write(secrets / "c.yaml", text))


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_check_config_exit_codes_and_summary(
    secrets: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_HTTP__PUBLIC_URL", "https://relay.example.com")
    good = write(secrets / "c.yaml", contract_config(secrets))
    assert main(["--config", str(good), "check-config"]) == 0
    out = capsys.readouterr().out
    assert "https://relay.example.com/hook/gh" in out
    assert "https://relay.example.com/hook/gl" in out
    assert "s3cret" not in out
    bad = write(secrets / "bad.yaml", "receivers: [{name: gh, type: github, secret_file: /nope}]")
    assert main(["--config", str(bad), "check-config"]) == 2
    err = capsys.readouterr().err
    assert "receivers.0" in err and str(bad) in err
