"""The registry client against a real Docker Registry v2: Basic auth and token auth."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.errors import Permanent, Transient
from relay.settings import RegistrySettings
from tests.build.token_registry import TokenRegistry, TokenService
from tests.support.images import push_multiarch_index, push_scratch_image
from tests.support.registry import Registry
from workers.build.auth import TokenCache
from workers.build.refs import ImageRef, parse_image
from workers.build.registry import HttpRegistry


def settings_for(
    host: str, username: str, password_file: Path, **extra: object
) -> RegistrySettings:
    return RegistrySettings.model_validate(
        {
            "url": host,
            "username": username,
            "password_file": str(password_file),
            "insecure": True,
            **extra,
        }
    )


def basic_settings(registry: Registry) -> RegistrySettings:
    return settings_for(registry.host, registry.username, registry.password_file)


async def test_digest_of_oci_docker_and_index(registry: Registry) -> None:
    oci = push_scratch_image(registry, "client/oci", "v1", b"one")
    docker = push_scratch_image(registry, "client/docker", "v1", b"two", media="docker")
    index = push_multiarch_index(registry, "client/multi", "v1")
    docker_list = push_multiarch_index(registry, "client/multi", "v2", media="docker")
    async with HttpRegistry(basic_settings(registry)) as client:
        assert await client.manifest_digest(parse_image(oci.ref)) == oci.digest
        assert await client.manifest_digest(parse_image(docker.ref)) == docker.digest
        assert await client.manifest_digest(parse_image(index.ref)) == index.digest
        assert await client.manifest_digest(parse_image(docker_list.ref)) == docker_list.digest
        assert await client.manifest_digest(parse_image(index.pinned)) == index.digest
        assert await client.manifest_digest(parse_image(f"{registry.host}/client/nope:v1")) is None
        config = await client.image_config(parse_image(index.ref))
        assert config is not None and config["architecture"] == "amd64"


async def test_tags_and_delete(registry: Registry) -> None:
    images = [
        push_scratch_image(registry, "client/del", f"v{i}", f"c{i}".encode()) for i in range(3)
    ]
    async with HttpRegistry(basic_settings(registry)) as client:
        assert sorted(await client.tags(registry.host, "client/del")) == ["v0", "v1", "v2"]
        assert await client.delete_manifest(registry.host, "client/del", images[0].digest)
        assert not await client.delete_manifest(registry.host, "client/del", images[0].digest)
        assert sorted(await client.tags(registry.host, "client/del")) == ["v1", "v2"]
        assert await client.tags(registry.host, "client/never-pushed") == []


async def test_wrong_password_is_unauthorized(registry: Registry, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    push_scratch_image(registry, "client/auth", "v1", b"x")
    async with HttpRegistry(settings_for(registry.host, registry.username, wrong)) as client:
        with pytest.raises(Permanent) as caught:
            await client.manifest_digest(parse_image(f"{registry.host}/client/auth:v1"))
    assert caught.value.reason == "unauthorized"
    assert "not-the-password" not in str(caught.value)


async def test_no_credentials_is_unauthorized(registry: Registry) -> None:
    anonymous = RegistrySettings(url=registry.host, insecure=True)
    async with HttpRegistry(anonymous) as client:
        with pytest.raises(Permanent) as caught:
            await client.manifest_digest(parse_image(f"{registry.host}/client/auth:v1"))
    assert caught.value.reason == "unauthorized"


async def test_registry_down_is_transient(registry_factory: object, tmp_path: Path) -> None:
    reg: Registry = registry_factory()  # type: ignore[operator]
    reg.stop()
    async with HttpRegistry(basic_settings(reg), timeout=5) as client:
        with pytest.raises(Transient) as caught:
            await client.manifest_digest(parse_image(f"{reg.host}/a:v1"))
    assert caught.value.reason == "registry_unreachable"


async def test_https_unless_insecure(registry: Registry) -> None:
    secure = RegistrySettings(url=registry.host, insecure=False)
    async with HttpRegistry(secure, timeout=5) as client:  # TLS to a plain-HTTP port fails
        with pytest.raises(Transient) as caught:
            await client.manifest_digest(parse_image(f"{registry.host}/a:v1"))
    assert "https://" in caught.value.detail


@pytest.fixture
async def token_registry(
    registry_factory: object, tmp_path: Path
) -> AsyncIterator[tuple[Registry, TokenRegistry]]:
    basic: Registry = registry_factory()  # type: ignore[operator]
    tokens = TokenService(basic.username, basic.password)
    await tokens.start()
    reg = TokenRegistry(tmp_path / "token-registry", basic.storage_dir, tokens)
    reg.start()
    try:
        yield basic, reg
    finally:
        reg.stop()
        await tokens.stop()


async def test_bearer_token_flow_and_cache(token_registry: tuple[Registry, TokenRegistry]) -> None:
    basic, reg = token_registry
    image = push_scratch_image(basic, "team/app", "v1", b"token-auth")
    index = push_multiarch_index(basic, "team/app", "multi")
    settings = settings_for(reg.host, basic.username, basic.password_file)
    cache = TokenCache()
    async with HttpRegistry(settings, tokens=cache) as client:
        ref = ImageRef(host=reg.host, repo="team/app", tag="v1")
        assert await client.manifest_digest(ref) == image.digest
        assert (
            await client.manifest_digest(ImageRef(host=reg.host, repo="team/app", tag="multi"))
            == index.digest
        )
        assert sorted(await client.tags(reg.host, "team/app")) == ["multi", "v1"]
    assert reg.tokens.issued == ["repository:team/app:pull"]  # one token, cached per scope
    async with HttpRegistry(settings, tokens=cache) as client:
        assert await client.delete_manifest(reg.host, "team/app", image.digest)
        assert await client.manifest_digest(ref) is None
    assert reg.tokens.issued == ["repository:team/app:pull", "repository:team/app:delete"]


async def test_bearer_wrong_password(
    token_registry: tuple[Registry, TokenRegistry], tmp_path: Path
) -> None:
    basic, reg = token_registry
    wrong = tmp_path / "wrong"
    wrong.write_text("wrong-password")
    async with HttpRegistry(settings_for(reg.host, basic.username, wrong)) as client:
        with pytest.raises(Permanent) as caught:
            await client.manifest_digest(ImageRef(host=reg.host, repo="team/app", tag="v1"))
    assert caught.value.reason == "unauthorized"
    assert reg.tokens.refused == 1
