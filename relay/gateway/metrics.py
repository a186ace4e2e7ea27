"""The gateway's Prometheus metrics, in a registry of its own (one per application).

Labels stay few: a receiver label holds only configured receiver names (anything else is
``unknown``), and the publish histogram is labelled by the routing key's first word.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "relay_gateway_requests",
            "HTTP requests answered, by receiver (or route) and status code.",
            ["receiver", "status"],
            registry=self.registry,
        )
        self.signature_failures = Counter(
            "relay_signature_failures",
            "Requests refused for a bad or missing signature, by receiver and reason.",
            ["receiver", "reason"],
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "relay_publish_confirm_seconds",
            "Seconds from publish to the broker's confirm, by the routing key's first word.",
            ["kind", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
