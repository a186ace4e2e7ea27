"""The deploy request (CONTRACT section 4): the one body users and n8n send to ``POST /deploy``.

Everything a deploy carries through the pipeline starts here, so the checks live here too: app
names that are DNS-1123 labels, versions that are image tags, file names that stay inside the
build context, and exactly one of a prebuilt image or a source.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    field_validator,
    model_validator,
)

APP_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# registry[:port]/path[:tag][@sha256:hex], lower-case path components as the distribution spec says.
IMAGE_REF = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
HEALTH_PATH = re.compile(r"^/[\x21-\x7e]*$")
CLONE_URL = re.compile(r"^(https?://|ssh://|git@)")
MAX_APP_LENGTH = 40
# Validators use fullmatch: with match, "$" also matches before a trailing newline ("hello\n").


def _pattern(regex: re.Pattern[str]) -> dict[str, JsonValue]:
    """The regex a validator applies, for the JSON schema (the OpenAPI document) to show."""
    return {"pattern": regex.pattern}


def check_app_name(value: str) -> str:
    if len(value) > MAX_APP_LENGTH:
        raise ValueError(f"app must be at most {MAX_APP_LENGTH} characters")
    if not APP_NAME.fullmatch(value):
        raise ValueError("app must be a DNS-1123 label: lower-case letters, digits and '-'")
    return value


def check_context_path(name: str) -> str:
    """A file name inside a build context: relative, no '..', no NUL, no empty parts."""
    if not name or "\x00" in name or "\\" in name:
        raise ValueError(f"file name {name!r} is not a plain relative path")
    path = PurePosixPath(name)
    if path.is_absolute():
        raise ValueError(f"file name {name!r} is absolute")
    if any(part in ("..", ".", "") for part in name.split("/")):
        raise ValueError(f"file name {name!r} must not contain '..', '.' or empty parts")
    return name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GitSource(_Strict):
    url: str = Field(
        description="Clone URL (https or ssh).",
        min_length=1,
        max_length=2048,
        json_schema_extra={"pattern": CLONE_URL.pattern},
    )
    ref: str = Field(default="main", description="Branch, tag or commit.", max_length=255)
    path: str = Field(default=".", description="Build context inside the repository.")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return value if value in (".", "") else check_context_path(value.strip("/"))

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value.startswith("-") or not CLONE_URL.match(value):
            raise ValueError("url must be an https://, http://, ssh:// or git@ clone URL")
        return value


class Source(_Strict):
    files: dict[str, str] | None = Field(default=None, description="Inline files by relative path.")
    dockerfile: str | None = Field(default=None, description="Dockerfile text for inline files.")
    git: GitSource | None = Field(default=None, description="Build from a Git repository instead.")

    @field_validator("files")
    @classmethod
    def _files(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            for name in value:
                check_context_path(name)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Source:
        if (self.git is None) == (self.files is None and self.dockerfile is None):
            raise ValueError("source needs either files (and a dockerfile) or git, not both")
        if self.git is None and not self.dockerfile and "Dockerfile" not in (self.files or {}):
            raise ValueError("source.files needs a dockerfile (or a file named Dockerfile)")
        return self


class Resources(_Strict):
    cpu_request: str | None = None
    memory_request: str | None = None
    cpu_limit: str | None = None
    memory_limit: str | None = None


class DeployRequest(_Strict):
    app: Annotated[
        str,
        Field(
            description="DNS-1123 label, at most 40 characters.",
            json_schema_extra={"pattern": APP_NAME.pattern, "maxLength": MAX_APP_LENGTH},
        ),
    ]
    version: Annotated[
        str,
        Field(description="Image tag of this version.", json_schema_extra=_pattern(IMAGE_TAG)),
    ]
    image: str | None = Field(
        default=None,
        description="Prebuilt image; its digest is pinned.",
        json_schema_extra=_pattern(IMAGE_REF),
    )
    source: Source | None = Field(default=None, description="What to build instead of image.")
    port: int = Field(default=8080, ge=1, le=65535, description="Container port.")
    replicas: int = Field(default=1, ge=0, le=20, description="Pods to run.")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Container environment.",
        json_schema_extra={"propertyNames": _pattern(ENV_NAME)},
    )
    health_path: str | None = Field(
        default=None,
        description="HTTP path for probes; TCP probes on the port without it.",
        json_schema_extra=_pattern(HEALTH_PATH),
    )
    resources: Resources | None = Field(default=None, description="Overrides of the defaults.")
    callback_url: AnyHttpUrl | None = Field(default=None, description="Where the result is POSTed.")

    @field_validator("app")
    @classmethod
    def _app(cls, value: str) -> str:
        return check_app_name(value)

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not IMAGE_TAG.fullmatch(value):
            raise ValueError("version must be a valid image tag ([A-Za-z0-9_.-], at most 128)")
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and not IMAGE_REF.fullmatch(value):
            raise ValueError("image must be a reference like registry:5000/name:tag")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not ENV_NAME.fullmatch(k)]
        if bad:
            raise ValueError(f"env names must be identifiers: {', '.join(sorted(bad))}")
        return value

    @field_validator("health_path")
    @classmethod
    def _health(cls, value: str | None) -> str | None:
        if value is not None and not HEALTH_PATH.fullmatch(value):
            raise ValueError("health_path must start with '/' and hold no spaces")
        return value

    @model_validator(mode="after")
    def _image_or_source(self) -> DeployRequest:
        if (self.image is None) == (self.source is None):
            raise ValueError("give exactly one of image or source")
        return self
