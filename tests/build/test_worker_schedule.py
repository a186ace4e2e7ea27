"""Build scheduling and registry state: concurrency, redelivery, retention, deletion, refusals."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import structlog

from relay.events import encode, new_event
from relay.events.data import DeployFailed, DeployRequested, ImagePushed
from tests.build.harness import (
    SCRATCH_APP,
    Harness,
    make_settings,
    recording_worker,
    run_app,
    unique_app,
)
from tests.support.registry import Registry


async def test_three_builds_overlap(
    registry: Registry, busybox_base: str, tmp_path: Path, buildah_root: Path
) -> None:
    settings = make_settings(
        registry, tmp_path, buildah_root=buildah_root, builder={"concurrency": 3}
    )
    worker, builder, _ = recording_worker(settings)
    async with Harness(settings, worker) as h:
        sent = [
            await h.deploy(
                {"app": unique_app("par"), "version": "v1", "source": run_app(busybox_base, str(i))}
            )
            for i in range(3)
        ]
        results = await asyncio.gather(*(h.outcome(s) for s in sent))
    assert [r.routing_key for r in results] == ["image.pushed"] * 3
    starts, ends = [s for s, _ in builder.spans], [e for _, e in builder.spans]
    assert len(builder.spans) == 3
    assert max(starts) < min(ends), builder.spans  # all three were running at one moment


async def test_builds_beyond_concurrency_wait(
    registry: Registry, tmp_path: Path, buildah_root: Path
) -> None:
    settings = make_settings(
        registry, tmp_path, buildah_root=buildah_root, builder={"concurrency": 1}
    )
    worker, builder, _ = recording_worker(settings)
    async with Harness(settings, worker) as h:
        sent = [
            await h.deploy({"app": unique_app("one"), "version": "v1", "source": SCRATCH_APP})
            for _ in range(2)
        ]
        await asyncio.gather(*(h.outcome(s) for s in sent))
    (_s1, e1), (s2, _e2) = sorted(builder.spans)
    assert e1 <= s2  # one at a time


async def test_redelivered_event_does_not_rebuild(
    registry: Registry, tmp_path: Path, buildah_root: Path
) -> None:
    settings = make_settings(registry, tmp_path, buildah_root=buildah_root)
    app = unique_app("redeliver")
    worker, builder, _ = recording_worker(settings)
    async with Harness(settings, worker) as h:
        sent = await h.deploy({"app": app, "version": "v1", "source": SCRATCH_APP})
        first = (await h.outcome(sent)).payload(ImagePushed)
    assert first.built and len(builder.spans) == 1
    # another process (a fresh worker and runtime) gets the same message again
    worker2, builder2, _ = recording_worker(settings)
    async with Harness(settings, worker2) as h2:
        await h2.publish(sent)
        again = (await h2.outcome(sent)).payload(ImagePushed)
    assert builder2.spans == []
    assert again.image == first.image and again.built is False
    assert again.source_digest == first.source_digest


async def test_same_version_with_new_source_is_rebuilt(
    registry: Registry, tmp_path: Path, buildah_root: Path
) -> None:
    settings = make_settings(registry, tmp_path, buildah_root=buildah_root)
    app = unique_app("changed")
    changed = {**SCRATCH_APP, "files": {"index.html": "<h1>changed</h1>\n"}}
    async with Harness(settings) as h:
        first = (
            await h.outcome(await h.deploy({"app": app, "version": "v1", "source": SCRATCH_APP}))
        ).payload(ImagePushed)
        second = (
            await h.outcome(await h.deploy({"app": app, "version": "v1", "source": changed}))
        ).payload(ImagePushed)
    assert second.built and second.image != first.image
    assert registry.manifest_digest(app, "v1") == second.image.split("@")[1]


async def test_retention_keeps_newest_k(
    registry: Registry, tmp_path: Path, buildah_root: Path
) -> None:
    settings = make_settings(
        registry, tmp_path, buildah_root=buildah_root, registry_extra={"keep_versions": 2}
    )
    app = unique_app("keep")
    digests: list[str] = []
    async with Harness(settings) as h:
        for version in ("v1", "v2", "v3", "v4"):
            source = {**SCRATCH_APP, "files": {"version.txt": version}}
            got = await h.outcome(
                await h.deploy({"app": app, "version": version, "source": source})
            )
            digests.append(got.payload(ImagePushed).image.split("@")[1])
    assert sorted(registry.tags(app)) == ["v3", "v4"]
    assert [registry.manifest_digest(app, d) for d in digests] == [
        None,
        None,
        digests[2],
        digests[3],
    ]


async def test_app_delete_removes_every_manifest(
    registry: Registry, tmp_path: Path, buildah_root: Path
) -> None:
    settings = make_settings(registry, tmp_path, buildah_root=buildah_root)
    app = unique_app("gone")
    async with Harness(settings) as h:
        for version in ("v1", "v2"):
            source = {**SCRATCH_APP, "files": {"version.txt": version}}
            await h.outcome(await h.deploy({"app": app, "version": version, "source": source}))
        deleted = await h.delete_app(app)
        for _ in range(200):
            if not registry.tags(app):
                break
            await asyncio.sleep(0.05)
        await h.idle()
    assert registry.tags(app) == []
    assert [e.routing_key for e in h.outcomes if e.deploymentid == deleted.deploymentid] == [
        "app.delete.requested"  # the request itself; no app.deleted, no deploy.failed
    ]


async def test_context_too_large_and_disabled_builder(registry: Registry, tmp_path: Path) -> None:
    settings = make_settings(registry, tmp_path, builder={"max_file_bytes": 100})
    async with Harness(settings) as h:
        big = {"files": {"big.txt": "x" * 101}, "dockerfile": "FROM scratch\n"}
        got = await h.outcome(
            await h.deploy({"app": unique_app("big"), "version": "v1", "source": big})
        )
    assert got.payload(DeployFailed).reason == "context_too_large"
    none = make_settings(registry, tmp_path, builder={"backend": "none"})
    async with Harness(none) as h:
        got = await h.outcome(
            await h.deploy({"app": unique_app("none"), "version": "v1", "source": SCRATCH_APP})
        )
    assert got.payload(DeployFailed).reason == "builder_disabled"


async def test_escaping_file_names_never_reach_the_disk(registry: Registry, tmp_path: Path) -> None:
    """Even a hand-made event that skipped the gateway's checks is refused before any write."""
    settings = make_settings(registry, tmp_path)
    worker, builder, recorder = recording_worker(settings)
    async with Harness(settings, worker) as h:
        for name in ("../x", "/etc/x", "../../escape-from-relay"):
            good = new_event(
                DeployRequested.model_validate(
                    {
                        "version": "v1",
                        "request": {"app": "esc", "version": "v1", "source": SCRATCH_APP},
                    }
                ),
                source="/tests",
                deploymentid=str(uuid.uuid4()),
                app="esc",
            )
            body = encode(good).replace(b'"index.html"', json.dumps(name).encode())
            await h.bus.publish_raw(body, routing_key="deploy.requested", message_id=good.id)
        await h.idle()
        dead = await h.bus.dead_letters()
    assert len(dead) == 3 and all("invalid event" in d.error for d in dead)
    assert builder.spans == [] and recorder.seen == []
    assert not (tmp_path / "x").exists() and not Path("/etc/x").exists()
    assert not any(tmp_path.parent.glob("escape-from-relay"))


async def test_app_delete_cleanup_never_fails_the_deletion(
    registry_factory: object, tmp_path: Path
) -> None:
    reg: Registry = registry_factory()  # type: ignore[operator]
    reg.stop()
    settings = make_settings(reg, tmp_path)  # 3 attempts, short delays
    with structlog.testing.capture_logs() as logs:
        async with Harness(settings) as h:
            sent = await h.delete_app(unique_app("offline"))
            async with asyncio.timeout(30):
                while not any(e["event"] == "image cleanup gave up" for e in logs):
                    await asyncio.sleep(0.05)
            await h.idle()
            dead = await h.bus.dead_letters()
    gave_up = next(e for e in logs if e["event"] == "image cleanup gave up")
    assert gave_up["reason"] == "registry_unreachable"
    assert [e.routing_key for e in h.outcomes if e.deploymentid == sent.deploymentid] == [
        "app.delete.requested"
    ]
    assert dead == []
    retries = [e for e in logs if e["event"] == "handler failed, will retry"]
    assert len(retries) == 2
