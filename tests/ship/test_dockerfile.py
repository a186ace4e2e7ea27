"""The Dockerfiles, read simply (no Docker engine here): multi-stage, the final stage runs as a
non-root user with a healthcheck and the relay entrypoint, carries no build tools, and uses no
architecture-specific step, so one file builds for linux/arm64 and linux/amd64.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ARCH_SPECIFIC = re.compile(r"amd64|x86_64|aarch64|arm64|uname -m|dpkg --print-architecture")
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|make|python3-dev|libffi-dev|libssl-dev)\b")


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions(path):
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.builder"])
def test_the_final_stage_is_locked_down(repo: Path, name: str) -> None:
    stages = _stages(repo / name)
    assert len(stages) >= 2, "multi-stage"
    final = stages[-1]
    users = [args for word, args in final if word == "USER"]
    assert users, "the final stage sets USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    health = [args for word, args in final if word == "HEALTHCHECK"]
    assert len(health) == 1 and "/healthz" in health[0] and "python" in health[0]
    entrypoint = [args for word, args in final if word == "ENTRYPOINT"]
    assert json.loads(entrypoint[-1]) == ["relay"]
    runs = " ".join(args for word, args in final if word == "RUN")
    assert not BUILD_TOOLS.search(runs), BUILD_TOOLS.search(runs)
    assert "--no-install-recommends" in runs and "rm -rf /var/lib/apt/lists/*" in runs
    copies = [args for word, args in final if word == "COPY"]
    assert any(c.startswith("--from=build /opt/relay") for c in copies)


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.builder"])
def test_it_builds_for_both_architectures(repo: Path, name: str) -> None:
    for word, args in _instructions(repo / name):
        assert not ARCH_SPECIFIC.search(args), f"{word} {args}"
        if word == "FROM":
            assert "--platform" not in args
    build_args = {
        a.split("=", 1)[0]: a.split("=", 1)[1]
        for w, a in _instructions(repo / name)
        if w == "ARG" and "=" in a
    }
    for image in build_args.values():
        assert ":" in image and not image.endswith(":latest"), image
    assert build_args["PYTHON_IMAGE"].startswith("python:3.11-slim")


def test_the_first_stage_builds_the_wheel(repo: Path) -> None:
    build = _stages(repo / "Dockerfile")[0]
    runs = " ".join(args for word, args in build if word == "RUN")
    assert "pip wheel" in runs and "/opt/relay/bin/pip install /dist/" in runs
    assert "relay --help" in runs


def test_the_builder_has_the_build_tools(repo: Path) -> None:
    final = _stages(repo / "Dockerfile.builder")[-1]
    text = " ".join(args for _, args in final)
    assert "buildah" in text and "git" in text and "/usr/local/bin/buildctl" in text


def test_the_context_holds_only_the_package(repo: Path) -> None:
    lines = [
        line
        for line in (repo / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!relay", "!workers"} <= set(lines)
