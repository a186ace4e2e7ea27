"""``git.push`` / ``git.tag``: reconcile the Flux objects a receiver names, as Flux's Receiver
would, but only for pushes that can change them (see ``targets``), without waiting for Flux.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from relay.errors import Permanent, StageError
from relay.events import CloudEvent
from relay.events.data import GitPush, GitRefChange, GitTag, ReconcileRequested
from relay.kube.base import FLUX_KINDS, GITREPOSITORIES, Obj, meta
from relay.settings import ReceiverSettings, ReconcileTarget
from workers.reconcile.flux import suspended
from workers.reconcile.patcher import Patched, Target
from workers.reconcile.targets import ignore_reason, tracks
from workers.runtime import Context

if TYPE_CHECKING:
    from workers.reconcile.worker import ReconcileWorker

log = structlog.get_logger(__name__)


async def reconcile_push(worker: ReconcileWorker, event: CloudEvent, ctx: Context) -> None:
    push: GitRefChange = event.payload(GitTag if event.routing_key == "git.tag" else GitPush)
    receiver = worker.settings.receiver(push.receiver)
    if receiver is None:
        log.info("push from an unknown receiver reconciles nothing", receiver=push.receiver)
        return
    why = ignore_reason(receiver, push)
    if why is not None:
        log.info("push reconciles nothing", why=why, ref=push.ref)
        return
    found, missing = await _resolve(worker, receiver)
    chosen = await _tracking(worker, found, push, receiver)
    if not chosen and not missing:
        log.info("push touches no ref a target tracks", ref=push.ref)
        return
    paused = [t for t, obj in chosen if suspended(obj)]
    active = [t for t, obj in chosen if not suspended(obj)]
    patched = await _patch_all(worker, active)
    if not patched and missing and not paused:
        raise Permanent("flux_object_not_found", f"no such object: {', '.join(map(str, missing))}")
    await ctx.publish(_requested(push, event.routing_key, patched, paused, missing))


async def _resolve(
    worker: ReconcileWorker, receiver: ReceiverSettings
) -> tuple[list[tuple[Target, Obj]], list[Target]]:
    """The configured targets as objects; named ones that do not exist are ``missing``."""
    found: list[tuple[Target, Obj]] = []
    missing: list[Target] = []
    for wanted in receiver.reconcile:
        if wanted.name == "*":
            found.extend(await _matching(worker, wanted))
            continue
        target = Target(FLUX_KINDS[wanted.kind], wanted.namespace, wanted.name)
        obj = await worker.read(target)
        if obj is None:
            missing.append(target)
        else:
            found.append((target, obj))
    return found, missing


async def _matching(worker: ReconcileWorker, wanted: ReconcileTarget) -> list[tuple[Target, Obj]]:
    resource = FLUX_KINDS[wanted.kind]
    informer = await worker.synced(resource, wanted.namespace)
    labels = wanted.match_labels or {}
    objects = list(informer.cache.values())
    chosen = [o for o in objects if labels.items() <= (meta(o).get("labels") or {}).items()]
    if not chosen:
        log.warning("no Flux object matches", kind=wanted.kind, labels=labels)
    return [(Target(resource, wanted.namespace, meta(o)["name"]), o) for o in chosen]


async def _tracking(
    worker: ReconcileWorker,
    found: list[tuple[Target, Obj]],
    push: GitRefChange,
    receiver: ReceiverSettings,
) -> list[tuple[Target, Obj]]:
    sources: dict[tuple[str, str], Obj | None] = {}
    for _, obj in found:
        ref = (obj.get("spec") or {}).get("sourceRef") or {}
        if ref.get("kind") == GITREPOSITORIES.kind:
            namespace = ref.get("namespace") or meta(obj).get("namespace")
            key = (str(namespace), str(ref.get("name")))
            sources[key] = await worker.read(Target(GITREPOSITORIES, *key))
    return [
        (target, obj)
        for target, obj in found
        if tracks(obj, push, receiver=receiver, sources=lambda ns, n: sources.get((ns, n)))
    ]


async def _patch_all(worker: ReconcileWorker, targets: list[Target]) -> dict[Target, Patched]:
    results = await asyncio.gather(*(worker.patch(t) for t in targets), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    for error in errors:
        if not isinstance(error, StageError):
            raise error
    if errors:
        # Retrying patches again those that succeeded: harmless, Flux treats it as a token.
        raise max(errors, key=lambda e: isinstance(e, Permanent))
    return {t: r for t, r in zip(targets, results, strict=True) if isinstance(r, Patched)}


def _requested(
    push: GitRefChange,
    trigger: str,
    patched: dict[Target, Patched],
    paused: list[Target],
    missing: list[Target],
) -> ReconcileRequested:
    values = {f"{t.resource.kind}/{t.namespace}/{t.name}": p.value for t, p in patched.items()}
    return ReconcileRequested(
        targets=[t.ref() for t in patched],
        requested_at_value=next(iter(values.values()), None),
        requested_at_values=values,
        commit=push.after,
        trigger=trigger,
        suspended=[t.ref() for t in paused],
        missing=[t.ref() for t in missing],
    )
