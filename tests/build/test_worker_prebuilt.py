"""Prebuilt images through the real runtime: pinned by digest, or failed with a reason."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import structlog

from relay.events.data import DeployFailed, ImagePushed
from tests.build.harness import Harness, make_settings, unique_app
from tests.support.images import push_multiarch_index, push_scratch_image
from tests.support.registry import Registry
from workers.build.refs import ImageRef
from workers.build.worker import BuildWorker


async def test_prebuilt_tag_is_pinned(registry: Registry, tmp_path: Path) -> None:
    app = unique_app("pre")
    image = push_scratch_image(registry, app, "v1", b"prebuilt")
    async with Harness(make_settings(registry, tmp_path)) as h:
        sent = await h.deploy({"app": app, "version": "v1", "image": image.ref})
        got = await h.outcome(sent)
    assert got.routing_key == "image.pushed"
    data = got.payload(ImagePushed)
    assert data.image == f"{registry.host}/{app}:v1@{image.digest}"
    assert data.built is False and data.version == "v1"
    assert set(data.stages) == {"accepted", "build"} and data.stages["build"] >= 0
    assert got.app == app and got.deploymentid == sent.deploymentid


async def test_prebuilt_multiarch_index_pins_the_index(registry: Registry, tmp_path: Path) -> None:
    app = unique_app("multi")
    index = push_multiarch_index(registry, app, "v1", platforms=("linux/amd64", "linux/arm64/v8"))
    async with Harness(make_settings(registry, tmp_path)) as h:
        got = await h.outcome(await h.deploy({"app": app, "version": "v1", "image": index.ref}))
    image = got.payload(ImagePushed).image
    assert image == f"{index.ref}@{index.digest}"
    assert index.digest not in index.platforms.values()


async def test_missing_image_fails_at_once(registry: Registry, tmp_path: Path) -> None:
    app = unique_app("missing")
    async with Harness(make_settings(registry, tmp_path)) as h:
        sent = await h.deploy({"app": app, "version": "v1", "image": f"{registry.host}/{app}:v1"})
        got = await h.outcome(sent)
        dead = await h.bus.dead_letters()
    failed = got.payload(DeployFailed)
    assert (failed.stage, failed.reason) == ("build", "image_not_found")
    assert f"{app}:v1" in failed.detail
    assert [d.attempts for d in dead] == [1]  # permanent: no retries


async def test_wrong_password_fails_unauthorized(registry: Registry, tmp_path: Path) -> None:
    app = unique_app("auth")
    image = push_scratch_image(registry, app, "v1", b"x")
    wrong = tmp_path / "wrong-password"
    wrong.write_text("definitely-wrong-password\n")
    async with Harness(make_settings(registry, tmp_path, password_file=wrong)) as h:
        got = await h.outcome(await h.deploy({"app": app, "version": "v1", "image": image.ref}))
    failed = got.payload(DeployFailed)
    assert failed.reason == "unauthorized"
    assert "definitely-wrong-password" not in failed.detail


async def test_registry_down_is_retried_then_fails(
    registry_factory: object, tmp_path: Path
) -> None:
    reg: Registry = registry_factory()  # type: ignore[operator]
    app = unique_app("down")
    image = push_scratch_image(reg, app, "v1", b"x")
    reg.stop()
    settings = make_settings(reg, tmp_path, retry={"delays": [0.05, 0.1, 0.2], "max_attempts": 4})
    async with Harness(settings) as h:
        got = await h.outcome(await h.deploy({"app": app, "version": "v1", "image": image.ref}))
        dead = await h.bus.dead_letters()
    failed = got.payload(DeployFailed)
    assert (failed.stage, failed.reason) == ("build", "registry_unreachable")
    assert "connect" in failed.detail.lower()
    assert [d.attempts for d in dead] == [4]


async def test_registry_back_during_retries_succeeds(
    registry_factory: object, tmp_path: Path
) -> None:
    reg: Registry = registry_factory()  # type: ignore[operator]
    app = unique_app("flaky")
    image = push_scratch_image(reg, app, "v1", b"x")
    reg.stop()
    settings = make_settings(reg, tmp_path, retry={"delays": [0.5], "max_attempts": 10})
    with structlog.testing.capture_logs() as logs:
        async with Harness(settings) as h:
            sent = await h.deploy({"app": app, "version": "v1", "image": image.ref})
            await asyncio.sleep(0.2)  # the first attempt finds the registry down
            reg.start()  # while the first retry waits
            got = await h.outcome(sent)
    assert got.payload(ImagePushed).image.endswith(image.digest)
    retries = [e for e in logs if e["event"] == "handler failed, will retry"]
    assert len(retries) == 1 and "registry_unreachable" in retries[0]["error"]


async def test_prebuilt_deploys_share_one_login(registry: Registry, tmp_path: Path) -> None:
    """The registry answers the first request with a challenge; later deploys of the same
    worker send the credentials at once (one request each instead of two)."""
    apps = [unique_app("login") for _ in range(3)]
    images = [push_scratch_image(registry, app, "v1", app.encode()) for app in apps]
    with structlog.testing.capture_logs() as logs:
        async with Harness(make_settings(registry, tmp_path)) as h:
            for app, image in zip(apps, images, strict=True):
                sent = await h.deploy({"app": app, "version": "v1", "image": image.ref})
                assert (await h.outcome(sent)).routing_key == "image.pushed"
    statuses = [e["status"] for e in logs if e["event"] == "registry request"]
    assert statuses == [401, 200, 200, 200]


class GatedRegistry:
    """A registry whose digest lookups wait until ``expected`` of them are waiting at once."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.inside = 0
        self.most = 0
        self.all_in = asyncio.Event()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[GatedRegistry]:
        yield self

    async def manifest_digest(self, ref: ImageRef) -> str | None:
        self.inside += 1
        self.most = max(self.most, self.inside)
        if self.inside >= self.expected:
            self.all_in.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_in.wait(), 5)
            return "sha256:" + "0" * 64
        finally:
            self.inside -= 1


async def test_many_prebuilt_deploys_are_resolved_at_once(
    registry: Registry, tmp_path: Path
) -> None:
    """50 deploys at once are all resolved together, not a few at a time behind the build
    slots (builder.prefetch)."""
    gate = GatedRegistry(expected=50)
    settings = make_settings(registry, tmp_path)
    worker = BuildWorker(settings, registry=gate.session)  # type: ignore[arg-type]
    async with Harness(settings, worker) as h:
        sent = [
            await h.deploy({"app": f"many-{i}", "version": "v1", "image": f"{registry.host}/x:v1"})
            for i in range(50)
        ]
        results = await asyncio.gather(*(h.outcome(s) for s in sent))
    assert {r.routing_key for r in results} == {"image.pushed"}
    assert gate.most == 50
