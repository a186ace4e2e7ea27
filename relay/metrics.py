"""Prometheus metrics of the workers and the tracker, in the process-wide registry.

The gateway's request metrics live in ``relay.gateway.metrics`` (a registry per application);
its ``/metrics`` serves both. Names are part of the outside contract: the shipped Grafana
dashboard and PrometheusRule query them.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

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
