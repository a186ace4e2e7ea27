"""``kubectl rollout status`` rules and early pod failures, on hand-written objects."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kube.objects import deadline_exceeded, deployment, pod, replicaset, rolling, waiting
from tests.support.kube_status import rolled_out
from workers.watch.rollout import (
    RolledOut,
    Rolling,
    Stuck,
    carries,
    deployment_of,
    latest_warning,
    new_replicaset,
    pod_failure,
    rollout_verdict,
)


def with_status(dep: dict[str, Any], status: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    dep["metadata"]["generation"] = generation
    return {**dep, "status": status}


def test_kubectl_rollout_status_rules_in_order() -> None:
    dep = deployment("hello", replicas=2)
    assert rollout_verdict(None) == Rolling("the Deployment does not exist")
    unobserved = with_status(dep, rolled_out(dep, generation=1), generation=2)
    assert rollout_verdict(unobserved) == Rolling(
        "waiting for deployment spec update to be observed"
    )
    assert rollout_verdict(with_status(dep, rolling(dep, updated=1))) == Rolling(
        "1 out of 2 new replicas have been updated"
    )
    assert rollout_verdict(with_status(dep, rolling(dep, updated=2, total=3))) == Rolling(
        "1 old replicas are pending termination"
    )
    assert rollout_verdict(with_status(dep, rolling(dep, updated=2, available=1))) == Rolling(
        "1 of 2 updated replicas are available"
    )
    assert rollout_verdict(with_status(dep, rolled_out(dep))) == RolledOut(
        'deployment "hello" successfully rolled out'
    )


def test_progress_deadline_exceeded_is_a_failure_with_the_controller_message() -> None:
    dep = deployment("hello")
    verdict = rollout_verdict(with_status(dep, deadline_exceeded(dep)))
    assert isinstance(verdict, Stuck) and verdict.reason == "progress_deadline_exceeded"
    assert 'deployment "hello" exceeded its progress deadline' in verdict.detail
    assert "timed out progressing" in verdict.detail


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ("ImagePullBackOff", "image_pull_backoff"),
        ("ErrImagePull", "image_pull_backoff"),
        ("CrashLoopBackOff", "crash_loop"),
        ("CreateContainerConfigError", "create_container_config_error"),
    ],
)
def test_pod_waiting_reasons_that_will_not_fix_themselves(state: str, reason: str) -> None:
    p = {**pod(replicaset(deployment("hello"))), "status": waiting(state, "the kubelet says why")}
    failure = pod_failure(p)
    assert failure is not None and failure.reason == reason
    assert state in failure.describe() and "the kubelet says why" in failure.describe()


def test_oom_killed_is_named_even_while_crash_looping() -> None:
    p = {
        **pod(replicaset(deployment("hello"))),
        "status": waiting("CrashLoopBackOff", "back-off", last_terminated="OOMKilled", restarts=3),
    }
    failure = pod_failure(p)
    assert failure is not None and failure.reason == "oom_killed"


def test_pending_or_creating_pods_are_not_failures() -> None:
    p = {**pod(replicaset(deployment("hello"))), "status": waiting("ContainerCreating")}
    assert pod_failure(p) is None
    assert pod_failure({**p, "status": {"phase": "Pending"}}) is None


def test_pods_and_replicasets_are_tied_to_their_deployment() -> None:
    dep = deployment("hello-world")
    dep["metadata"]["uid"] = "dep-uid"
    dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "2"
    old, new = (
        replicaset(dep, suffix="old", revision="1"),
        replicaset(dep, suffix="new", revision="2"),
    )
    assert new_replicaset(dep, [old, new]) == "hello-world-new"
    assert deployment_of(pod(new)) == "hello-world"


def test_carries_tells_this_deploy_from_another() -> None:
    dep = deployment("hello", deployment_id="d-1", image="r/hello:v1@sha256:aaa")
    assert carries(dep, deployment_id="d-1", image=None) is None
    assert carries(dep, deployment_id="d-2", image=None) == "deploy d-1"
    plain = deployment("hello", image="r/hello:v1@sha256:aaa")
    assert carries(plain, deployment_id="d-2", image="r/hello@sha256:aaa") is None
    assert (
        carries(plain, deployment_id=None, image="r/hello:v2@sha256:bbb")
        == "image r/hello:v1@sha256:aaa"
    )


def test_latest_warning_event_is_quoted() -> None:
    events = [
        {
            "type": "Normal",
            "reason": "Pulling",
            "message": "Pulling image",
            "lastTimestamp": "2026-01-01T00:00:03Z",
        },
        {
            "type": "Warning",
            "reason": "Failed",
            "message": "old",
            "lastTimestamp": "2026-01-01T00:00:01Z",
        },
        {
            "type": "Warning",
            "reason": "Failed",
            "message": "manifest unknown",
            "lastTimestamp": "2026-01-01T00:00:02Z",
        },
    ]
    assert latest_warning(events) == "Failed: manifest unknown"
    assert latest_warning(events[:1]) is None
