"""Pure pieces of the build worker: references, challenges, retention choice, builder argv."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from relay.errors import Permanent
from relay.settings import BuilderSettings
from workers.build.auth import Credentials, TokenCache, parse_challenge
from workers.build.builders.base import BuildJob, ToolBuilder
from workers.build.builders.buildah import BuildahBuilder
from workers.build.builders.buildkit import BuildkitBuilder
from workers.build.builders.docker import DockerBuilder
from workers.build.refs import parse_image
from workers.build.retention import TagInfo, _created, doomed

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "host", "repo", "tag", "digest"),
    [
        ("127.0.0.1:5000/hello:v1", "127.0.0.1:5000", "hello", "v1", None),
        ("registry.lan/team/app", "registry.lan", "team/app", "latest", None),
        ("alpine:3.19", "docker.io", "library/alpine", "3.19", None),
        ("localhost/x@" + DIGEST, "localhost", "x", None, DIGEST),
        ("r.io:443/a/b:t@" + DIGEST, "r.io:443", "a/b", "t", DIGEST),
    ],
)
def test_parse_image(text: str, host: str, repo: str, tag: str | None, digest: str | None) -> None:
    ref = parse_image(text)
    assert (ref.host, ref.repo, ref.tag, ref.digest) == (host, repo, tag, digest)
    assert ref.reference == (digest or tag)


@pytest.mark.parametrize("bad", ["Hello:v1", "r.io/a@sha256:12", "r.io/a:bad tag", "r.io/a//b"])
def test_parse_image_refuses(bad: str) -> None:
    with pytest.raises(Permanent) as caught:
        parse_image(bad)
    assert caught.value.reason == "invalid_image"


def test_pinned_keeps_tag_and_adds_digest() -> None:
    assert parse_image("127.0.0.1:5000/a:v2").pinned(DIGEST) == f"127.0.0.1:5000/a:v2@{DIGEST}"
    assert parse_image("docker.io/library/a:v2").api_host == "registry-1.docker.io"


def test_parse_bearer_challenge() -> None:
    header = (
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:team/app:pull,push"'
    )
    challenge = parse_challenge(header)
    assert challenge is not None
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:team/app:pull,push",
    }
    basic = parse_challenge('Basic realm="relay-test-registry"')
    assert basic is not None and basic.scheme == "basic"
    assert parse_challenge(None) is None


def test_token_cache_expires() -> None:
    cache = TokenCache()
    cache.put("h", "s", "tok", 300)
    assert cache.get("h", "s") == "tok"
    assert cache.get("h", "other") is None
    cache.put("h", "s", "old", -5)  # nonsense expiry: the default lifetime, not "forever"
    assert cache.get("h", "s") == "old"
    cache.forget("h", "s")
    assert cache.get("h", "s") is None


def test_credentials_never_in_repr() -> None:
    creds = Credentials(host="h", username="u", password=SecretStr("hunter2-secret"))
    assert "hunter2" not in repr(creds)
    assert creds.basic_header().startswith("Basic ")


def _tag(tag: str, digest: str, minutes_ago: float | None, now: datetime) -> TagInfo:
    created = None if minutes_ago is None else now - timedelta(minutes=minutes_ago)
    return TagInfo(tag, digest, created)


def test_retention_keeps_newest_and_shared_digests() -> None:
    now = datetime.now(UTC)
    tags = [  # newest first, as inventory() sorts them
        _tag("v5", "d5", 10, now),
        _tag("v4", "d4", 20, now),
        _tag("also-v4", "d4", 25, now),
        _tag("v3", "d3", 30, now),
        _tag("v2", "d2", 40, now),
        _tag("v1", "d1", 50, now),
    ]
    assert doomed(tags, keep=2, now=now) == ["d3", "d2", "d1"]
    assert doomed(tags, keep=2, protect={"d2"}, now=now) == ["d3", "d1"]
    assert doomed(tags, keep=2, min_age=35 * 60, now=now) == ["d2", "d1"]
    assert doomed(tags, keep=10, now=now) == []


def test_retention_never_deletes_undated_images() -> None:
    now = datetime.now(UTC)
    tags = [_tag("v2", "d2", 1, now), _tag("v1", "d1", 2, now), _tag("odd", "dx", None, now)]
    assert doomed(tags, keep=1, now=now) == ["d1"]


def test_created_parses_go_nanoseconds() -> None:
    parsed = _created({"created": "2024-05-01T10:20:30.123456789Z"})
    assert parsed == datetime(2024, 5, 1, 10, 20, 30, 123456, tzinfo=UTC)
    assert _created({"created": "garbage"}) is None
    assert _created(None) is None


def _job(tmp_path: Path) -> BuildJob:
    return BuildJob(
        context_dir=tmp_path / "context",
        dockerfile=tmp_path / "relay.Dockerfile",
        ref="127.0.0.1:5000/app:v1",
        labels={"dev.relay.source-digest": DIGEST},
        workdir=tmp_path,
    )


def test_buildkit_argv(tmp_path: Path) -> None:
    settings = BuilderSettings(backend="buildkit", platform="linux/arm64")
    creds = Credentials(host="127.0.0.1:5000", username="u", password=SecretStr("s3cret-pw"))
    argv = BuildkitBuilder(settings, creds=creds, insecure=True).build_args(
        _job(tmp_path), tmp_path / "m.json"
    )
    assert argv[:4] == ["--addr", "tcp://buildkitd:1234", "build", "--frontend"]
    assert f"dockerfile={tmp_path}" in argv and "filename=relay.Dockerfile" in argv
    assert "platform=linux/arm64" in argv
    assert f"label:dev.relay.source-digest={DIGEST}" in argv
    assert "type=image,name=127.0.0.1:5000/app:v1,push=true,registry.insecure=true" in argv
    assert not any("s3cret" in a for a in argv)


def test_docker_argv(tmp_path: Path) -> None:
    creds = Credentials(host="127.0.0.1:5000", username="u", password=SecretStr("s3cret-pw"))
    argv = DockerBuilder(BuilderSettings(backend="docker"), creds=creds).build_args(_job(tmp_path))
    assert argv[0] == "build" and argv[-1] == str(tmp_path / "context")
    assert argv[argv.index("--tag") : argv.index("--tag") + 2] == ["--tag", "127.0.0.1:5000/app:v1"]
    assert not any("s3cret" in a for a in argv)


@pytest.mark.parametrize(
    ("backend", "missing"),
    [(BuildahBuilder, "it"), (BuildkitBuilder, "buildctl"), (DockerBuilder, "it")],
)
async def test_a_missing_tool_is_builder_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: type[ToolBuilder], missing: str
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing to find there
    builder = backend(BuilderSettings(backend=backend.name), creds=None, insecure=False)
    with pytest.raises(Permanent) as caught:
        await builder.build_and_push(_job(tmp_path), lambda line: None)
    assert caught.value.reason == "builder_unavailable"
    assert (
        caught.value.detail == f"builder.backend is {backend.name} but {missing} is not installed"
    )
