"""The compose stack's own service files, run for real outside containers.

- compose/git: entrypoint.sh with nginx, fcgiwrap and git-http-backend, as an unprivileged
  user (as in its image): the GitOps repository is created with the empty parent
  kustomization.yaml; clone and push work with the token; a wrong token is refused.
- compose/registry: entrypoint.sh renders config.template.yml with the notification token (to a
  private file, never on a command line); Docker distribution serves that config: htpasswd
  auth, the /debug/health the healthcheck uses, and a push notified to the relay's registry
  receiver with the Bearer token. The read-only switch k8s' garbage-collect CronJob uses
  (REGISTRY_STORAGE_MAINTENANCE_READONLY) refuses pushes and serves pulls.
Skipped where the Debian packages these need are not installed (nginx-light, fcgiwrap, git,
docker-registry, apache2-utils).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

NOBODY = 65534


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_http(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the process group we started (fcgiwrap's children outlive it briefly)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    time.sleep(0.3)


@pytest.fixture
def git_server(repo: Path) -> Iterator[tuple[str, Path]]:
    _need("nginx", "fcgiwrap", "git", "htpasswd", "setpriv")
    # Its own directory under /tmp: pytest's tmp_path sits in a 0700 folder nobody cannot enter.
    with tempfile.TemporaryDirectory(prefix="relay-git-") as name:
        base = Path(name)
        (base / "root").mkdir()
        (base / "token").write_text("s3cret-token\n")
        if os.geteuid() == 0:
            for path in [base, *base.rglob("*")]:
                os.chown(path, NOBODY, NOBODY)
        port = _free_port()
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(base),
            "GIT_ROOT": str(base / "root"),
            "GIT_PASSWORD_FILE": str(base / "token"),
            "GIT_PORT": str(port),
            "RUN_DIR": str(base / "run"),
            "NGINX_TEMPLATE": str(repo / "compose" / "git" / "nginx.conf.template"),
        }
        drop = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"]
        script = ["sh", str(repo / "compose" / "git" / "entrypoint.sh")]
        argv = [*(drop if os.geteuid() == 0 else []), *script]
        proc = subprocess.Popen(argv, env=env, start_new_session=True, stderr=subprocess.DEVNULL)
        try:
            _wait_http(f"http://127.0.0.1:{port}/healthz")
            yield f"127.0.0.1:{port}", base
        finally:
            _stop(proc)


def _git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(cwd or "/tmp"),
    }
    return subprocess.run(
        ["git", *args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_the_git_server_serves_the_gitops_repository(
    git_server: tuple[str, Path], tmp_path: Path
) -> None:
    address, _ = git_server
    clone = tmp_path / "clone"
    done = _git("clone", f"http://relay:s3cret-token@{address}/homelab.git", str(clone))
    assert done.returncode == 0, done.stderr
    parent = clone / "kubernetes" / "rpi-cluster" / "apps" / "dynamic" / "kustomization.yaml"
    assert yaml.safe_load(parent.read_text())["resources"] == []
    (clone / "README").write_text("pushed\n")
    _git("add", "README", cwd=clone)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-m", "x", cwd=clone)
    pushed = _git("push", "origin", "main", cwd=clone)
    assert pushed.returncode == 0, pushed.stderr
    refused = _git("clone", f"http://relay:wrong@{address}/homelab.git", str(tmp_path / "no"))
    assert refused.returncode != 0 and "Authentication failed" in refused.stderr
    anonymous = urllib.request.Request(
        f"http://{address}/homelab.git/info/refs?service=git-upload-pack"
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(anonymous, timeout=5)
    err.value.close()
    assert err.value.code == 401


class _Notifications(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.headers.get("Authorization", ""), json.loads(body)))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _render(repo: Path, tmp_path: Path, token: str) -> Path:
    (tmp_path / "token").write_text(token + "\n")
    rendered = tmp_path / "rendered.yml"
    env = {
        "PATH": os.environ["PATH"],
        "REGISTRY_BIN": "true",  # render only; this test runs the registry itself below
        "REGISTRY_CONFIG_TEMPLATE": str(repo / "compose" / "registry" / "config.template.yml"),
        "REGISTRY_RENDERED_CONFIG": str(rendered),
        "REGISTRY_NOTIFY_TOKEN_FILE": str(tmp_path / "token"),
    }
    subprocess.run(
        ["sh", str(repo / "compose" / "registry" / "entrypoint.sh")],
        env=env,
        check=True,
        timeout=30,
    )
    return rendered


def test_the_registry_entrypoint_refuses_a_token_sed_would_break(
    repo: Path, tmp_path: Path
) -> None:
    (tmp_path / "token").write_text("a|b&c\n")
    env = {
        "PATH": os.environ["PATH"],
        "REGISTRY_BIN": "true",
        "REGISTRY_CONFIG_TEMPLATE": str(repo / "compose" / "registry" / "config.template.yml"),
        "REGISTRY_RENDERED_CONFIG": str(tmp_path / "r.yml"),
        "REGISTRY_NOTIFY_TOKEN_FILE": str(tmp_path / "token"),
    }
    done = subprocess.run(
        ["sh", str(repo / "compose" / "registry" / "entrypoint.sh")],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1 and "token" in done.stderr and not (tmp_path / "r.yml").exists()


@pytest.fixture
def registry(
    repo: Path, tmp_path: Path
) -> Iterator[tuple[str, str, list[tuple[str, dict[str, Any]]]]]:
    _need("docker-registry", "htpasswd")
    token = "tok_" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:24]
    rendered = _render(repo, tmp_path, token)
    assert oct(rendered.stat().st_mode & 0o777) == "0o600"
    config = yaml.safe_load(rendered.read_text())
    assert config["notifications"]["endpoints"][0]["headers"]["Authorization"] == [
        f"Bearer {token}"
    ]
    hook = HTTPServer(("127.0.0.1", 0), _Notifications)
    _Notifications.received = []
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    port, debug = _free_port(), _free_port()
    config["http"]["addr"] = f"127.0.0.1:{port}"
    config["http"]["debug"]["addr"] = f"127.0.0.1:{debug}"
    config["storage"]["filesystem"]["rootdirectory"] = str(tmp_path / "data")
    subprocess.run(
        ["htpasswd", "-bcB", str(tmp_path / "htpasswd"), "relay", "pw"],
        check=True,
        capture_output=True,
    )
    config["auth"]["htpasswd"]["path"] = str(tmp_path / "htpasswd")
    config["notifications"]["endpoints"][0]["url"] = (
        f"http://127.0.0.1:{hook.server_port}/hook/registry"
    )
    config["notifications"]["endpoints"][0]["backoff"] = "1s"
    (tmp_path / "run.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(tmp_path / "run.yml")],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_http(f"http://127.0.0.1:{debug}/debug/health")
        yield f"127.0.0.1:{port}", token, _Notifications.received
    finally:
        _stop(proc)
        hook.shutdown()
        hook.server_close()


def _request(
    url: str, method: str = "GET", body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    auth = {"Authorization": "Basic " + b64encode(b"relay:pw").decode()}
    req = urllib.request.Request(
        url, data=body or None, method=method, headers={**auth, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers)


def _push(address: str, repo_name: str) -> int:
    """Push a one-layer image with the Registry v2 API; returns the manifest PUT's status."""
    base = f"http://{address}/v2/{repo_name}"
    blobs = {}
    for content in (
        b'{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}',
        b"layer",
    ):
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        status, headers = _request(f"{base}/blobs/uploads/", "POST")
        if status != 202:
            return status
        location = headers["Location"]
        sep = "&" if "?" in location else "?"
        status, _ = _request(
            f"{location}{sep}digest={digest}",
            "PUT",
            content,
            {"Content-Type": "application/octet-stream"},
        )
        assert status == 201
        blobs[content] = (digest, len(content))
    config, layer = blobs.values()
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": config[0],
            "size": config[1],
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "digest": layer[0],
                "size": layer[1],
            }
        ],
    }
    status, _ = _request(
        f"{base}/manifests/v1",
        "PUT",
        json.dumps(manifest).encode(),
        {"Content-Type": manifest["mediaType"]},
    )
    return status


def test_the_registry_config_serves_and_notifies_the_relay(
    registry: tuple[str, str, list[tuple[str, dict[str, Any]]]],
) -> None:
    address, token, received = registry
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://{address}/v2/", timeout=5)
    err.value.close()
    assert err.value.code == 401
    assert _push(address, "hello") == 201
    deadline = time.monotonic() + 10
    while not any(e["action"] == "push" for _, body in received for e in body["events"]):
        assert time.monotonic() < deadline, "no push notification reached the relay's receiver"
        time.sleep(0.05)
    assert {auth for auth, _ in received} == {f"Bearer {token}"}
    assert not any(e["action"] == "pull" for _, body in received for e in body["events"])


def test_read_only_mode_refuses_pushes_and_serves_pulls(repo: Path, tmp_path: Path) -> None:
    """The switch k8s/rpi-cluster/infrastructure/registry/app/garbage-collect.yaml flips."""
    _need("docker-registry", "htpasswd")
    script = yaml.safe_load_all(
        (repo / "k8s/rpi-cluster/infrastructure/registry/app/garbage-collect.yaml").read_text()
    )
    cronjob = next(d for d in script if d["kind"] == "CronJob")
    text = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][0]
    setting = 'REGISTRY_STORAGE_MAINTENANCE_READONLY={"enabled": true}'
    assert f"'{setting}'" in text and "REGISTRY_STORAGE_MAINTENANCE_READONLY-" in text
    name, value = setting.split("=", 1)
    port = _free_port()
    subprocess.run(
        ["htpasswd", "-bcB", str(tmp_path / "htpasswd"), "relay", "pw"],
        check=True,
        capture_output=True,
    )
    config = {
        "version": 0.1,
        "storage": {
            "filesystem": {"rootdirectory": str(tmp_path / "data")},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}"},
        "auth": {"htpasswd": {"realm": "r", "path": str(tmp_path / "htpasswd")}},
    }
    (tmp_path / "ro.yml").write_text(yaml.safe_dump(config))
    env = {**os.environ, name: value}
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(tmp_path / "ro.yml")],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/")
        assert _request(f"http://127.0.0.1:{port}/v2/")[0] == 200
        assert _push(f"127.0.0.1:{port}", "hello") == 405
        assert _request(f"http://127.0.0.1:{port}/v2/_catalog")[0] == 200
    finally:
        _stop(proc)
