"""How to read a Deployment and its pods: rolled out, still rolling, or failed, and why.

The rollout rules are ``kubectl rollout status`` (PROTOCOLS 3.2): readiness is decided from the
Deployment alone. Pods are read only to name a failure early, before the progress deadline:
an image that cannot be pulled or a container that keeps crashing will not fix itself.
Pure functions over the objects' JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.kube.base import Obj, condition, meta, spec_of, status_of

DEPLOYMENT_ID = "relay.dev/deployment-id"
REVISION = "deployment.kubernetes.io/revision"
# Waiting reasons of a container that mean the rollout will not finish, by relay reason.
WAITING_FAILURES = {
    "ImagePullBackOff": "image_pull_backoff",
    "ErrImagePull": "image_pull_backoff",
    "InvalidImageName": "image_pull_backoff",
    "CrashLoopBackOff": "crash_loop",
    "CreateContainerConfigError": "create_container_config_error",
}
OOM_KILLED = "OOMKilled"


@dataclass(frozen=True)
class Rolling:
    why: str


@dataclass(frozen=True)
class RolledOut:
    message: str


@dataclass(frozen=True)
class Stuck:
    reason: str
    detail: str


Verdict = Rolling | RolledOut | Stuck


def rollout_verdict(deployment: Obj | None) -> Verdict:
    """``kubectl rollout status`` on one Deployment object."""
    if deployment is None:
        return Rolling("the Deployment does not exist")
    name = meta(deployment).get("name")
    status = status_of(deployment)
    if int(meta(deployment).get("generation") or 0) > int(status.get("observedGeneration") or 0):
        return Rolling("waiting for deployment spec update to be observed")
    progressing = condition(deployment, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        detail = f'deployment "{name}" exceeded its progress deadline'
        message = progressing.get("message")
        return Stuck("progress_deadline_exceeded", f"{detail}: {message}" if message else detail)
    wanted = int(spec_of(deployment).get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < wanted:
        return Rolling(f"{updated} out of {wanted} new replicas have been updated")
    if total > updated:
        return Rolling(f"{total - updated} old replicas are pending termination")
    if available < updated:
        return Rolling(f"{available} of {updated} updated replicas are available")
    return RolledOut(f'deployment "{name}" successfully rolled out')


def carries(deployment: Obj, *, deployment_id: str | None, image: str | None) -> str | None:
    """None when the Deployment is this deploy's; else which deploy or image it carries."""
    annotations = meta(deployment).get("annotations") or {}
    template = (spec_of(deployment).get("template") or {}).get("metadata") or {}
    found = annotations.get(DEPLOYMENT_ID) or (template.get("annotations") or {}).get(DEPLOYMENT_ID)
    if deployment_id and found:
        return None if found == deployment_id else f"deploy {found}"
    images = [str(c.get("image")) for c in _containers(deployment)]
    if image and images and not any(_same_image(i, image) for i in images):
        return f"image {', '.join(images)}"
    return None


def _containers(deployment: Obj) -> list[Obj]:
    pod_spec = (spec_of(deployment).get("template") or {}).get("spec") or {}
    return [c for c in pod_spec.get("containers") or [] if isinstance(c, dict)]


def _same_image(found: str, wanted: str) -> bool:
    if found == wanted:
        return True
    found_digest, wanted_digest = found.partition("@")[2], wanted.partition("@")[2]
    return bool(found_digest) and found_digest == wanted_digest


def new_replicaset(deployment: Obj, replicasets: list[Obj]) -> str | None:
    """The name of the Deployment's current ReplicaSet: owned by it, same revision."""
    revision = (meta(deployment).get("annotations") or {}).get(REVISION)
    uid = meta(deployment).get("uid")
    if not revision:
        return None
    for rs in replicasets:
        owned = any(ref.get("uid") == uid for ref in meta(rs).get("ownerReferences") or [])
        if owned and (meta(rs).get("annotations") or {}).get(REVISION) == revision:
            return str(meta(rs).get("name"))
    return None


def owner_replicaset(pod: Obj) -> str | None:
    for ref in meta(pod).get("ownerReferences") or []:
        if ref.get("kind") == "ReplicaSet" and ref.get("name"):
            return str(ref["name"])
    return None


def deployment_of(pod: Obj) -> str | None:
    """The Deployment a pod belongs to: its ReplicaSet's name without the template hash."""
    replicaset = owner_replicaset(pod)
    return replicaset.rsplit("-", 1)[0] if replicaset and "-" in replicaset else None


@dataclass(frozen=True)
class PodFailure:
    reason: str
    pod: str
    container: str
    state: str
    message: str

    def describe(self) -> str:
        said = f": {self.message}" if self.message else ""
        return f"pod {self.pod} container {self.container}: {self.state}{said}"


def pod_failure(pod: Obj) -> PodFailure | None:
    """The first container state that will not fix itself, if any."""
    status = status_of(pod)
    name = str(meta(pod).get("name"))
    for cs in [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]:
        found = _container_failure(name, cs)
        if found is not None:
            return found
    return None


def _container_failure(pod: str, cs: Obj) -> PodFailure | None:
    container = str(cs.get("name"))
    state, last = cs.get("state") or {}, cs.get("lastState") or {}
    waiting = state.get("waiting") or {}
    oom = (last.get("terminated") or {}).get("reason") == OOM_KILLED or (
        (state.get("terminated") or {}).get("reason") == OOM_KILLED
    )
    if oom and not cs.get("ready"):
        now = waiting.get("reason") or "terminated"
        message = f"the container ran out of memory (OOMKilled); now {now}"
        return PodFailure("oom_killed", pod, container, OOM_KILLED, message)
    reason = WAITING_FAILURES.get(str(waiting.get("reason")))
    if reason is not None:
        return PodFailure(
            reason, pod, container, str(waiting["reason"]), str(waiting.get("message") or "")
        )
    return None


def latest_warning(events: list[Obj]) -> str | None:
    """The message of the newest Warning event, with its reason."""
    warnings = [e for e in events if e.get("type") == "Warning"]
    if not warnings:
        return None
    newest = max(warnings, key=_event_time)
    return f"{newest.get('reason')}: {newest.get('message')}"


def _event_time(event: Obj) -> str:
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or meta(event).get("creationTimestamp")
        or ""
    )
