"""Loading: read the YAML file and the environment into ``Settings``, or fail with ``ConfigError``.

A validation failure becomes one line per bad key, naming the file and the dotted key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from relay.errors import ConfigError
from relay.settings.root import Settings


def config_path(explicit: str | Path | None = None) -> Path | None:
    raw = explicit or os.environ.get("RELAY_CONFIG")
    return Path(raw) if raw else None


def load_settings(path: str | Path | None = None) -> Settings:
    """Load settings from the YAML file and the environment, or raise ``ConfigError``."""
    file = config_path(path)
    data: dict[str, Any] = {}
    if file is not None:
        data = _read_yaml(file)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, file)) from None


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {file} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {file} is not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {file}: the top level must be a mapping of keys")
    return raw


def _describe(exc: ValidationError, file: Path | None) -> str:
    where = f"config file {file}" if file else "settings"
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{where}: key {key}: {msg}")
    return "\n".join(lines)
