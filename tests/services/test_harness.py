"""Proof that the real-service harness does what the relay's tests will rely on."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support._http import basic_auth, http_request, http_status
from tests.support._procs import LOOPBACK, ServiceError
from tests.support.gitserver import GitServer
from tests.support.images import (
    Buildah,
    push_multiarch_index,
    push_scratch_image,
)
from tests.support.registry import (
    ALL_MANIFEST_TYPES,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Registry,
)

# --- registry ---------------------------------------------------------------------------------


def test_registry_requires_auth(registry: Registry) -> None:
    anon = registry.request("GET", "/v2/", auth=False)
    assert anon.status == 401
    assert (anon.header("www-authenticate") or "").startswith("Basic ")
    wrong = registry.request(
        "GET",
        "/v2/",
        auth=False,
        headers={"Authorization": basic_auth(registry.username, "not-the-password")},
    )
    assert wrong.status == 401
    assert registry.request("GET", "/v2/").status == 200
    assert registry.host.startswith("127.0.0.1:")
    assert registry.url == f"http://{registry.host}"
    assert registry.password_file.read_text() == registry.password


def test_buildah_push_then_head_digest_then_delete(
    registry: Registry, buildah: Buildah, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("hello\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /hello.txt\n")
    ref = f"{registry.host}/harness/scratch:v1"
    buildah.bud(ctx, ref)
    pushed = buildah.push(ref, registry)

    head = registry.request(
        "HEAD",
        "/v2/harness/scratch/manifests/v1",
        headers={"Accept": ", ".join(ALL_MANIFEST_TYPES)},
    )
    assert head.status == 200
    assert head.header("docker-content-digest") == pushed
    assert head.header("content-type") == OCI_MANIFEST  # buildah pushes OCI by default

    assert registry.delete_manifest("harness/scratch", pushed) == 202
    assert registry.manifest_digest("harness/scratch", "v1") is None
    assert registry.manifest_digest("harness/scratch", pushed) is None


def test_raw_images_and_multiarch_index_resolve(registry: Registry) -> None:
    img = push_scratch_image(registry, "harness/raw", "v1", b"payload")
    assert registry.manifest_digest("harness/raw", "v1") == img.digest
    assert img.pinned == f"{registry.host}/harness/raw@{img.digest}"

    docker_img = push_scratch_image(registry, "harness/raw", "docker", b"payload", media="docker")
    media, _ = registry.get_manifest("harness/raw", "docker", accept=(DOCKER_MANIFEST,))
    assert media == DOCKER_MANIFEST
    assert registry.manifest_digest("harness/raw", "docker") == docker_img.digest

    idx = push_multiarch_index(registry, "harness/multi", "v1")
    assert registry.manifest_digest("harness/multi", "v1") == idx.digest
    media, body = registry.get_manifest("harness/multi", "v1")
    assert media == OCI_INDEX
    listed = {
        f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"]
        for m in body["manifests"]
    }
    assert listed == dict(idx.platforms)
    assert len(set(listed.values())) == 2
    for digest in listed.values():
        assert registry.manifest_digest("harness/multi", digest) == digest
    # Trap kept visible: distribution 2.8 answers 404 for an OCI index unless Accept names it.
    no_accept = registry.request("HEAD", "/v2/harness/multi/manifests/v1")
    assert no_accept.status == 404


def test_registry_restart_same_port_and_storage(
    registry_factory: Callable[..., Registry],
) -> None:
    reg = registry_factory()
    img = push_scratch_image(reg, "harness/restart", "v1", b"x")
    host = reg.host
    reg.stop()
    assert http_status(f"{reg.url}/v2/") == 0
    reg.start()
    assert reg.host == host
    assert reg.manifest_digest("harness/restart", "v1") == img.digest


def _squat(port: int = 0) -> socket.socket:
    """A listening socket on ``port`` (0: any free one), as another program would hold it."""
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind((LOOPBACK, port))
    squatter.listen()
    return squatter


def test_a_taken_port_moves_a_first_start_but_fails_a_restart(tmp_path: Path) -> None:
    with _squat() as first, Registry(tmp_path / "registry", port=first.getsockname()[1]) as reg:
        assert reg.port != first.getsockname()[1] and reg.running
        assert f"{LOOPBACK}:{reg.port}" in reg.config_path.read_text()
        assert http_status(f"{reg.url}/v2/") == 401
        reg.stop()
        assert not reg.running
        with _squat(reg.port), pytest.raises(ServiceError, match=f"port {reg.port} is taken"):
            reg.start()
        assert not reg.running
        reg.start()  # the port is free again: same port, same storage
        assert http_status(f"{reg.url}/v2/") == 401


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], dict[str, Any]]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append(({k.lower(): v for k, v in self.headers.items()}, json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def hook_server() -> Iterator[tuple[str, list[tuple[dict[str, str], dict[str, Any]]]]]:
    received: list[tuple[dict[str, str], dict[str, Any]]] = []
    handler = type("Hook", (_Hook,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/registry-events", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_registry_notifications_reach_endpoint(
    registry_factory: Callable[..., Registry],
    hook_server: tuple[str, list[tuple[dict[str, str], dict[str, Any]]]],
) -> None:
    url, received = hook_server
    reg = registry_factory(notify_url=url, notify_headers={"Authorization": "Bearer hook-token"})
    img = push_scratch_image(reg, "harness/notify", "v1", b"n")
    deadline = time.monotonic() + 10
    pushes: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not pushes:
        time.sleep(0.05)
        pushes = [
            ev
            for headers, env in list(received)
            if headers.get("authorization") == "Bearer hook-token"
            for ev in env["events"]
            if ev["action"] == "push" and ev["target"].get("tag") == "v1"  # blobs: no tag
        ]
    assert pushes, f"no push event with the configured header; got {received!r}"
    target = pushes[0]["target"]
    assert target["repository"] == "harness/notify"
    assert target["digest"] == img.digest


# --- git smart HTTP ---------------------------------------------------------------------------


def _commit(gs: GitServer, work: Path, rel: str, content: str, message: str) -> None:
    (work / rel).parent.mkdir(parents=True, exist_ok=True)
    (work / rel).write_text(content)
    gs.git("add", "--all", cwd=work)
    gs.git(
        "-c",
        "user.name=Relay Test",
        "-c",
        "user.email=relay@example.invalid",
        "commit",
        "--quiet",
        "-m",
        message,
        cwd=work,
    )


def test_git_clone_and_push_with_credentials(git_server: GitServer, tmp_path: Path) -> None:
    assert "@" not in git_server.url
    assert git_server.url.startswith("http://127.0.0.1:")
    assert git_server.url.endswith("/homelab.git")
    assert git_server.token_file.read_text() == git_server.password
    work = tmp_path / "clone"
    git_server.git("clone", "--quiet", git_server.authed_url(), str(work))
    assert (work / "README.md").is_file()
    assert git_server.git("rev-parse", "--abbrev-ref", "HEAD", cwd=work).stdout.strip() == "main"

    _commit(git_server, work, "apps/web/release.yaml", "image: web:v2\n", "Deploy web v2")
    git_server.git("push", "--quiet", "origin", "main", cwd=work)

    assert git_server.read_file("apps/web/release.yaml") == "image: web:v2\n"
    assert git_server.read_file("missing.yaml") is None
    log = git_server.log(5)
    assert [e.subject for e in log] == ["Deploy web v2", "Initial commit"]
    assert log[0].author_name == "Relay Test"
    assert git_server.head() == log[0].sha


def test_git_wrong_password_rejected_with_401(git_server: GitServer, tmp_path: Path) -> None:
    probe = f"{git_server.url}/info/refs?service=git-upload-pack"
    assert http_request("GET", probe).status == 401
    wrong = {"Authorization": basic_auth(git_server.username, "wrong-password")}
    assert http_request("GET", probe, headers=wrong).status == 401
    assert http_request("GET", probe, headers=git_server.auth_headers).status == 200

    res = git_server.git(
        "clone",
        git_server.authed_url(password="wrong-password"),
        str(tmp_path / "c"),
        check=False,
    )
    assert res.returncode != 0
    assert "Authentication failed" in res.stderr
    # no credentials at all: fails at once instead of prompting (GIT_TERMINAL_PROMPT=0)
    res = git_server.git("ls-remote", git_server.url, check=False)
    assert res.returncode != 0
    assert "terminal prompts disabled" in res.stderr


def test_git_non_fast_forward_rejected_by_server(git_server: GitServer, tmp_path: Path) -> None:
    work = tmp_path / "clone"
    git_server.git("clone", "--quiet", git_server.authed_url(), str(work))
    theirs = git_server.foreign_push({"apps/api/release.yaml": "image: api:v9\n"}, "Their change")
    assert git_server.log(1)[0].author_name == "Someone Else"

    _commit(git_server, work, "apps/web/release.yaml", "image: web:v3\n", "Our change")
    res = git_server.git("push", "origin", "main", cwd=work, check=False)
    assert res.returncode != 0
    assert "fetch first" in res.stderr  # refused on the refs the server advertised

    git_server.git("fetch", "--quiet", "origin", cwd=work)
    res = git_server.git("push", "--force", "origin", "main", cwd=work, check=False)
    assert res.returncode != 0
    assert "denying non-fast-forward" in res.stderr  # the server's own receive-pack refusal
    assert git_server.head() == theirs

    git_server.git(
        "-c",
        "user.name=Relay Test",
        "-c",
        "user.email=relay@example.invalid",
        "rebase",
        "--quiet",
        "origin/main",
        cwd=work,
    )
    git_server.git("push", "--quiet", "origin", "main", cwd=work)
    assert [e.subject for e in git_server.log(3)] == [
        "Our change",
        "Their change",
        "Initial commit",
    ]


def test_git_server_restart_same_url(git_server: GitServer) -> None:
    url = git_server.url
    sha = git_server.head()
    git_server.stop()
    assert git_server.git("ls-remote", git_server.authed_url(), check=False).returncode != 0
    git_server.start()
    assert git_server.url == url
    out = git_server.git("ls-remote", git_server.authed_url(), "refs/heads/main").stdout
    assert out.split()[0] == sha


# --- busybox base + RUN -------------------------------------------------------------------


def test_busybox_base_supports_run_steps(
    registry: Registry, busybox_base: str, buildah: Buildah, tmp_path: Path
) -> None:
    assert busybox_base == f"{registry.host}/relay-test/busybox:latest"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {busybox_base}\nRUN echo hi > /x\nRUN test \"$(cat /x)\" = hi && sh -c 'ls /bin'\n"
    )
    ref = f"{registry.host}/harness/app:v1"
    buildah.bud(ctx, ref, registry=registry)
    digest = buildah.push(ref, registry)
    assert registry.manifest_digest("harness/app", "v1") == digest

    ctr = buildah.run("from", "--tls-verify=false", "--creds", registry.creds, ref).stdout.strip()
    out = buildah.run("run", "--isolation", "chroot", ctr, "--", "cat", "/x").stdout
    assert out == "hi\n"
