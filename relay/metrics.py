"""Prometheus metrics every relay process exposes on ``/metrics``.

One registry per process (the default one); names are part of the outside contract because the
shipped Grafana dashboard and PrometheusRule query them.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

GATEWAY_REQUESTS = Counter(
    "relay_gateway_requests",
    "Gateway requests by route or receiver and status.",
    ["receiver", "status"],
)
SIGNATURE_FAILURES = Counter(
    "relay_signature_failures", "Requests refused for a bad or missing signature.", ["receiver"]
)
PUBLISH_CONFIRM = Histogram(
    "relay_publish_confirm_seconds",
    "Time from publish to the broker's confirm.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DEPLOYMENTS = Counter("relay_deployments", "Deployments that ended, by result.", ["result"])
STAGE_SECONDS = Histogram(
    "relay_stage_seconds",
    "Seconds each deploy stage took.",
    ["stage"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900),
)
IN_FLIGHT = Gauge("relay_deploys_in_flight", "Deployments accepted and not yet ended.")
QUEUE_MESSAGES = Gauge("relay_queue_messages", "Messages waiting in a worker queue.", ["queue"])
QUEUE_CONSUMERS = Gauge("relay_queue_consumers", "Consumers of a worker queue.", ["queue"])
DEAD_LETTERS = Gauge("relay_dead_letters", "Messages in the dead-letter queue.")
CALLBACK_FAILURES = Counter(
    "relay_callback_failures", "Callbacks and sink notifications that failed for good.", ["target"]
)
HANDLED = Counter(
    "relay_worker_messages", "Messages handled by workers, by outcome.", ["worker", "outcome"]
)


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric, and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST
