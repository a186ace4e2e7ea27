"""The rules for reading Flux status (CONTRACT 7, PROTOCOLS 3.1), on hand-written objects."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from workers.reconcile.flux import (
    Done,
    Failed,
    Waiting,
    annotation_patch,
    handled_since,
    kustomization_verdict,
    requested_at_now,
    revision_has,
    source_verdict,
)

SHA = "a" * 40
OTHER = "b" * 40


def obj(kind: str = "GitRepository", *, generation: int = 1, **status: Any) -> dict[str, Any]:
    conditions = status.pop("conditions", [])
    return {
        "kind": kind,
        "metadata": {"name": "x", "namespace": "flux-system", "generation": generation},
        "status": {"observedGeneration": 1, "conditions": conditions, **status},
    }


def ready(status: str = "True", reason: str = "Succeeded", message: str = "ok") -> dict[str, str]:
    return {"type": "Ready", "status": status, "reason": reason, "message": message}


def test_requested_at_is_rfc3339_with_nanoseconds_and_strictly_increasing() -> None:
    values = [requested_at_now() for _ in range(1000)]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", v) for v in values)
    assert values == sorted(values) and len(set(values)) == len(values)
    parsed = datetime.fromisoformat(values[0][:26] + "+00:00")  # microseconds part parses
    assert parsed.tzinfo is not None


def test_annotation_patch_is_a_merge_patch_of_one_annotation() -> None:
    assert annotation_patch("v") == {
        "metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "v"}}
    }


def test_handled_since_accepts_ours_or_a_later_coalesced_value_only() -> None:
    first, later = requested_at_now(), requested_at_now()
    assert handled_since(obj(lastHandledReconcileAt=first), first)
    assert handled_since(obj(lastHandledReconcileAt=later), first)
    assert not handled_since(obj(lastHandledReconcileAt=first), later)
    assert not handled_since(obj(), first)
    # Someone else's token (the notification-controller's Go time.String()) must match exactly.
    go_style = "2026-08-07 13:00:00.123456789 +0000 UTC m=+12.3"
    assert not handled_since(obj(lastHandledReconcileAt=go_style), first)
    assert handled_since(obj(lastHandledReconcileAt=go_style), go_style)


def test_revision_has_reads_both_revision_formats() -> None:
    assert revision_has(f"main@sha1:{SHA}", SHA)
    assert revision_has(f"main/{SHA}", SHA)
    assert revision_has(f"main@sha1:{SHA}", SHA[:7])
    assert not revision_has(f"main@sha1:{OTHER}", SHA)
    assert not revision_has(None, SHA)
    assert not revision_has(f"main@sha1:{SHA}", "abc")  # too short to mean anything


def test_source_done_when_the_artifact_holds_the_commit() -> None:
    value = requested_at_now()
    verdict = source_verdict(obj(artifact={"revision": f"main@sha1:{SHA}"}), value, SHA)
    assert verdict == Done(f"main@sha1:{SHA}")


def test_source_done_when_it_fetched_a_later_commit_after_our_request() -> None:
    value = requested_at_now()
    fetched = obj(
        lastHandledReconcileAt=value,
        artifact={"revision": f"main@sha1:{OTHER}"},
        conditions=[ready()],
    )
    assert source_verdict(fetched, value, SHA) == Done(f"main@sha1:{OTHER}")


def test_source_waits_while_our_request_is_not_handled() -> None:
    value = requested_at_now()
    old = obj(
        lastHandledReconcileAt="earlier",
        artifact={"revision": f"main@sha1:{OTHER}"},
        conditions=[ready()],
    )
    verdict = source_verdict(old, value, SHA)
    assert isinstance(verdict, Waiting) and "not yet handled" in verdict.why


def test_source_failure_after_our_request_carries_flux_message() -> None:
    value = requested_at_now()
    failing = obj(
        lastHandledReconcileAt=value,
        conditions=[
            ready(
                "False",
                "GitOperationFailed",
                "failed to checkout and determine revision: unable to clone",
            )
        ],
    )
    verdict = source_verdict(failing, value, SHA)
    assert isinstance(verdict, Failed)
    assert "GitOperationFailed" in verdict.message and "unable to clone" in verdict.message


def test_an_old_failure_is_not_ours() -> None:
    value = requested_at_now()
    failing = obj(
        lastHandledReconcileAt="earlier", conditions=[ready("False", "GitOperationFailed", "old")]
    )
    assert isinstance(source_verdict(failing, value, SHA), Waiting)


def test_stalled_fails_at_once_even_before_handling() -> None:
    stalled = {"type": "Stalled", "status": "True", "reason": "InvalidURL", "message": "bad url"}
    verdict = source_verdict(
        obj(conditions=[ready("False", "InvalidURL", "bad url"), stalled]), requested_at_now(), SHA
    )
    assert isinstance(verdict, Failed) and "bad url" in verdict.message


def test_progressing_reasons_are_not_failures() -> None:
    value = requested_at_now()
    for reason in ("Progressing", "DependencyNotReady"):
        waiting = obj(
            "Kustomization",
            lastHandledReconcileAt=value,
            conditions=[ready("False", reason, "wait")],
        )
        assert isinstance(kustomization_verdict(waiting, value, SHA), Waiting)


def test_kustomization_done_needs_ready_and_the_revision() -> None:
    value = requested_at_now()
    applied = obj(
        "Kustomization",
        lastHandledReconcileAt=value,
        lastAppliedRevision=f"main@sha1:{SHA}",
        conditions=[ready()],
    )
    assert kustomization_verdict(applied, value, SHA) == Done(f"main@sha1:{SHA}")
    unready = obj(
        "Kustomization",
        lastHandledReconcileAt=value,
        lastAppliedRevision=f"main@sha1:{SHA}",
        conditions=[ready("Unknown", "Progressing", "health checks")],
    )
    assert isinstance(kustomization_verdict(unready, value, SHA), Waiting)


def test_kustomization_mid_reconcile_or_unobserved_generation_waits() -> None:
    value = requested_at_now()
    reconciling = {
        "type": "Reconciling",
        "status": "True",
        "reason": "Progressing",
        "message": "applying",
    }
    busy = obj(
        "Kustomization",
        lastHandledReconcileAt=value,
        lastAppliedRevision=f"main@sha1:{SHA}",
        conditions=[ready(), reconciling],
    )
    assert isinstance(kustomization_verdict(busy, value, SHA), Waiting)
    unobserved = obj(
        "Kustomization",
        generation=2,
        lastHandledReconcileAt=value,
        lastAppliedRevision=f"main@sha1:{SHA}",
        conditions=[ready()],
    )
    assert isinstance(kustomization_verdict(unobserved, value, SHA), Waiting)


def test_kustomization_failure_with_retry_is_reported() -> None:
    value = requested_at_now()
    retrying = {
        "type": "Reconciling",
        "status": "True",
        "reason": "ProgressingWithRetry",
        "message": "retrying",
    }
    failed = obj(
        "Kustomization",
        lastHandledReconcileAt=value,
        conditions=[
            ready("False", "BuildFailed", "kustomize build failed: accumulating resources"),
            retrying,
        ],
    )
    verdict = kustomization_verdict(failed, value, SHA)
    assert isinstance(verdict, Failed) and "kustomize build failed" in verdict.message


def test_missing_objects_wait() -> None:
    assert isinstance(kustomization_verdict(None, requested_at_now(), SHA), Waiting)
    assert isinstance(source_verdict(None, requested_at_now(), SHA), Waiting)
