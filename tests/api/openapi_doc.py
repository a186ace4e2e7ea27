"""The OpenAPI document of the HTTP API (docs/openapi.yaml) and the models part of it comes from.

The deploy request's schemas are generated from ``relay.events.deploy.DeployRequest``; run
``python -m tests.api.openapi_doc`` to print them as they belong under ``components.schemas``
after changing the model (``test_openapi_accuracy`` fails until the document holds them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from relay.events.deploy import DeployRequest

REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
DOCUMENT = REPO / "docs" / "openapi.yaml"
REF_TEMPLATE = "#/components/schemas/{model}"


def load() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text())
    return document


def model_schemas() -> dict[str, Any]:
    """DeployRequest and the models it nests, as OpenAPI component schemas."""
    schema = DeployRequest.model_json_schema(ref_template=REF_TEMPLATE)
    nested = schema.pop("$defs", {})
    return {"DeployRequest": schema, **nested}


if __name__ == "__main__":
    print(yaml.safe_dump(model_schemas(), sort_keys=False, width=100), end="")
