"""The apps namespace as both workers see it: shared informers on its Deployments and Pods, and
the early naming of a rollout failure from the pods of the Deployment's current ReplicaSet.

The watch worker uses it while it follows a rollout. The reconcile worker uses it while Flux
health-checks a Kustomization: with ``wait: true`` Flux sets ``lastAppliedRevision`` only once
the rollout is healthy, so without this a bad image would surface only at Flux's timeout, as
``HealthCheckFailed``, instead of as ``image_pull_backoff`` within seconds.
"""

from __future__ import annotations

from collections import OrderedDict

import structlog

from relay.errors import Permanent
from relay.kube.base import DEPLOYMENTS, EVENTS, PODS, REPLICASETS, Cluster, Obj, events_selector
from relay.kube.base import label_selector as selector_of
from relay.kube.errors import KubeError
from relay.kube.informer import Informer, Informers
from workers.watch import rollout

log = structlog.get_logger(__name__)

MANAGED = "app.kubernetes.io/managed-by=relay"
REMEMBERED = 4096  # (Deployment, revision) -> current ReplicaSet lookups kept


class AppsWatch:
    """See the module docstring; one per worker, over the worker's ``Informers``."""

    def __init__(self, cluster: Cluster, informers: Informers, namespace: str) -> None:
        self.cluster = cluster
        self.informers = informers
        self.namespace = namespace
        self._replicasets: OrderedDict[tuple[str, str], str] = OrderedDict()

    def deployments(self) -> Informer:
        return self.informers.get(DEPLOYMENTS, self.namespace, label_selector=MANAGED)

    def pods(self) -> Informer:
        """Pods keyed by their Deployment's name (their ReplicaSet's, less the hash)."""
        return self.informers.get(
            PODS, self.namespace, label_selector=MANAGED, key=rollout.deployment_of
        )

    async def failure(self, app: str) -> Permanent | None:
        """A ``Permanent`` naming why the app's current pods will not come up, if they won't."""
        deployment = self.deployments().get(app)
        if deployment is None:
            return None
        pods = self.pods().objects_for(app)
        failing = [(pod, f) for pod in pods if (f := rollout.pod_failure(pod)) is not None]
        if not failing:
            return None
        current = await self._current_replicaset(deployment)
        for pod, found in failing:
            if current is not None and rollout.owner_replicaset(pod) == current:
                return Permanent(found.reason, await self._explain(found), stage="rollout")
        return None

    async def _current_replicaset(self, deployment: Obj) -> str | None:
        md = deployment.get("metadata") or {}
        revision = (md.get("annotations") or {}).get(rollout.REVISION)
        key = (str(md.get("uid")), str(revision))
        if key in self._replicasets:
            return self._replicasets[key]
        if not revision:
            return None
        match = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        try:
            listed = await self.cluster.list(
                REPLICASETS, self.namespace, label_selector=selector_of(match)
            )
        except KubeError as exc:
            log.info("cannot list ReplicaSets to name a failure", error=exc.message)
            return None
        found = rollout.new_replicaset(deployment, listed.items)
        if found is not None:
            self._replicasets[key] = found
            while len(self._replicasets) > REMEMBERED:
                self._replicasets.popitem(last=False)
        return found

    async def _explain(self, failure: rollout.PodFailure) -> str:
        """The pod's state, and the kubelet's latest Warning event about it when there is one."""
        try:
            listed = await self.cluster.list(
                EVENTS, self.namespace, field_selector=events_selector("Pod", failure.pod)
            )
        except KubeError:
            return failure.describe()
        warning = rollout.latest_warning(listed.items)
        return failure.describe() + (f" (event {warning})" if warning else "")
