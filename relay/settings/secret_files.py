"""Secrets by file: a ``*_file`` key names a mounted Secret, read into a ``SecretStr``.

Secrets are never accepted on argv: each secret-bearing section takes a ``*_file`` path (a mounted
Kubernetes Secret), checked (exists, readable, not empty) and read while the settings validate, so a
missing or empty file is a configuration error that names its key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, SecretStr


def read_secret_file(path: Path) -> SecretStr:
    """Read one secret file; trailing newlines (as ``echo`` writes them) are not part of it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"secret file {path} does not exist") from None
    except OSError as exc:
        raise ValueError(f"secret file {path} cannot be read: {exc.strerror}") from None
    value = text.rstrip("\r\n")
    if not value.strip():
        raise ValueError(f"secret file {path} is empty")
    return SecretStr(value)


def _check_secret_file(path: Path) -> Path:
    read_secret_file(path)
    return path


# A path to a secret, checked (exists, readable, not empty) while the settings validate.
SecretFile = Annotated[Path, AfterValidator(_check_secret_file)]


def read_optional_secret(path: Path | None) -> SecretStr | None:
    return read_secret_file(path) if path is not None else None
