"""Source builds with the real buildah and registry, through the real runtime."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import structlog

from relay.events.data import DeployFailed, ImagePushed
from tests.build.harness import (
    SCRATCH_APP,
    Harness,
    alive_with,
    config_of,
    layer_files,
    make_settings,
    push_web_app,
    recording_worker,
    run_app,
    unique_app,
)
from tests.support.gitserver import GitServer
from tests.support.registry import Registry
from workers.build.context import SOURCE_LABEL


async def test_scratch_app_is_built_and_pushed(
    registry: Registry, tmp_path: Path, buildah_root: Path
) -> None:
    app = unique_app("scratch")
    settings = make_settings(registry, tmp_path, buildah_root=buildah_root)
    async with Harness(settings) as h:
        got = await h.outcome(await h.deploy({"app": app, "version": "v1", "source": SCRATCH_APP}))
    assert got.routing_key == "image.pushed", got.data
    data = got.payload(ImagePushed)
    assert data.built is True
    assert data.image.startswith(f"{registry.host}/{app}:v1@sha256:")
    digest = data.image.split("@")[1]
    assert registry.manifest_digest(app, "v1") == digest
    labels = config_of(registry, data.image)["config"]["Labels"]  # type: ignore[index]
    assert labels[SOURCE_LABEL] == data.source_digest
    assert list((tmp_path / "builds").iterdir()) == []  # the private build directory is gone


async def test_run_step_on_the_tests_busybox_base(
    registry: Registry, busybox_base: str, tmp_path: Path, buildah_root: Path
) -> None:
    app, marker = unique_app("run"), uuid.uuid4().hex
    settings = make_settings(registry, tmp_path, buildah_root=buildah_root)
    async with Harness(settings) as h:
        sent = await h.deploy(
            {"app": app, "version": "v1", "source": run_app(busybox_base, marker)}
        )
        got = await h.outcome(sent)
    assert got.routing_key == "image.pushed", got.data
    files = layer_files(registry, got.payload(ImagePushed).image)
    assert files["app/built.txt"] == f"{marker}\n".encode()  # the RUN step ran in the build


async def test_build_failure_reports_last_lines(
    registry: Registry, busybox_base: str, tmp_path: Path, buildah_root: Path
) -> None:
    app = unique_app("fail")
    source = {
        "files": {"a": "a"},
        "dockerfile": f"FROM {busybox_base}\nRUN echo boom-{app} && exit 7\n",
    }
    async with Harness(make_settings(registry, tmp_path, buildah_root=buildah_root)) as h:
        got = await h.outcome(await h.deploy({"app": app, "version": "v1", "source": source}))
        dead = await h.bus.dead_letters()
    failed = got.payload(DeployFailed)
    assert failed.reason == "build_failed"
    assert f"boom-{app}" in failed.detail and "buildah bud" in failed.detail
    assert [d.attempts for d in dead] == [1]


async def test_timeout_kills_the_build(
    registry: Registry, busybox_base: str, tmp_path: Path, buildah_root: Path
) -> None:
    marker = f"6{uuid.uuid4().int % 1000}.{os.getpid()}"
    source = {
        "files": {"a": "a"},
        "dockerfile": f"FROM {busybox_base}\nRUN echo sleeping && sleep {marker}\n",
    }
    settings = make_settings(registry, tmp_path, buildah_root=buildah_root, builder={"timeout": 4})
    started = time.monotonic()
    async with Harness(settings) as h:
        got = await h.outcome(
            await h.deploy({"app": unique_app("slow"), "version": "v1", "source": source})
        )
    failed = got.payload(DeployFailed)
    assert failed.reason == "timeout" and "sleeping" in failed.detail
    assert time.monotonic() - started < 30
    for _ in range(100):
        if not alive_with(marker):
            break
        await asyncio.sleep(0.05)
    assert alive_with(marker) == []


async def test_git_source_build(
    registry: Registry, git_server: GitServer, tmp_path: Path, buildah_root: Path
) -> None:
    sha = push_web_app(git_server, tmp_path)
    settings = make_settings(registry, tmp_path, buildah_root=buildah_root)
    worker, _, recorder = recording_worker(settings)
    url = git_server.authed_url()
    source = {"git": {"url": url, "ref": sha, "path": "apps/web"}}
    async with Harness(settings, worker) as h:
        got = await h.outcome(
            await h.deploy({"app": unique_app("git"), "version": "v1", "source": source})
        )
    assert got.routing_key == "image.pushed", got.data
    assert layer_files(registry, got.payload(ImagePushed).image)["index.html"] == b"<h1>hi</h1>\n"
    assert not any(git_server.password in " ".join(argv) for argv in recorder.seen)


async def test_no_secret_in_logs_or_argv(
    registry: Registry, busybox_base: str, tmp_path: Path, buildah_root: Path
) -> None:
    settings = make_settings(registry, tmp_path, buildah_root=buildah_root)
    worker, _, recorder = recording_worker(settings)
    with structlog.testing.capture_logs() as logs:  # raw event dicts, before any redaction
        async with Harness(settings, worker) as h:
            built = await h.deploy(
                {"app": unique_app("sec"), "version": "v1", "source": run_app(busybox_base, "s")}
            )
            assert (await h.outcome(built)).routing_key == "image.pushed"
    assert recorder.seen, "the build spawned processes"
    flat_argv = "\n".join(" ".join(argv) for argv in recorder.seen)
    assert registry.password not in flat_argv and "--creds" not in flat_argv
    assert "--authfile" in flat_argv
    assert any(e["event"] == "build output" for e in logs)
    assert registry.password not in repr(logs)
