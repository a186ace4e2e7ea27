"""The shipped n8n workflow: importable shape, the documented chain, and a signature we accept."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

from relay.events.deploy import DeployRequest
from relay.signing import relay_signature

WORKFLOW = Path(__file__).resolve().parents[2] / "examples" / "n8n" / "deploy-app.json"


def load() -> dict[str, object]:
    data: dict[str, object] = json.loads(WORKFLOW.read_text(encoding="utf-8"))
    return data


def test_nodes_form_the_documented_chain() -> None:
    workflow = load()
    nodes = {n["name"]: n for n in workflow["nodes"]}  # type: ignore[attr-defined]
    connections = workflow["connections"]
    assert isinstance(connections, dict)
    chain, name = [], "Start"
    while name in connections:
        chain.append(nodes[name]["type"])
        name = connections[name]["main"][0][0]["node"]
    assert chain == [
        "n8n-nodes-base.manualTrigger",
        "n8n-nodes-base.set",
        "n8n-nodes-base.set",
        "n8n-nodes-base.crypto",
        "n8n-nodes-base.httpRequest",
        "n8n-nodes-base.wait",
        "n8n-nodes-base.if",
    ]
    for targets in connections.values():
        for branch in targets["main"]:
            assert all(t["node"] in nodes for t in branch)
    crypto = nodes["Sign"]["parameters"]
    assert (crypto["action"], crypto["type"], crypto["encoding"]) == ("hmac", "SHA256", "hex")
    http = nodes["POST /deploy"]["parameters"]
    assert http["contentType"] == "raw" and http["body"] == "={{ $json.body }}"
    headers = {h["name"]: h["value"] for h in http["headerParameters"]["parameters"]}
    assert headers == {
        "X-Relay-Timestamp": "={{ $json.timestamp }}",
        "X-Relay-Signature": "=sha256={{ $json.signature }}",
    }
    assert (
        "$execution.resumeUrl"
        in nodes["Deploy request"]["parameters"]["assignments"]["assignments"][0]["value"]
    )
    assert nodes["Wait for the relay"]["parameters"]["resume"] == "webhook"


def test_what_the_crypto_node_computes_is_what_the_gateway_accepts() -> None:
    body = json.dumps(
        {
            "app": "hello",
            "version": "v1",
            "source": {"files": {"index.html": "<h1>hi</h1>"}, "dockerfile": "FROM x\n"},
            "port": 8080,
            "callback_url": "https://n8n.example.com/webhook-waiting/42",
        }
    )
    DeployRequest.model_validate_json(body)
    timestamp = "1767225600"
    n8n_hex = hmac.new(b"the-secret", f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    assert "sha256=" + n8n_hex == relay_signature("the-secret", body.encode(), int(timestamp))
