"""Invariants of the deploy runs beyond the shared ones in ``chaos.pipeline``: kills that landed,
images pushed once, failures called back, accepted webhooks recorded, dead letters accounted for.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from chaos.checks import manifest_pushes
from chaos.observe import FAILED
from chaos.pipeline import Run
from chaos.report import Result

if TYPE_CHECKING:
    from chaos.kill_workers import KillRecord, Spec
    from chaos.stack import Stack


def _trigger(r: KillRecord) -> str:
    if r.kill.trigger is None:
        return ""
    if r.triggered:
        return " (its log showed the moment)"
    return " (the moment never came: killed anyway)"


def judge_kills(result: Result, records: list[KillRecord], stack: Stack) -> None:
    for i, r in enumerate(records, start=1):
        trigger = _trigger(r)
        caught = "requests unanswered" if r.kill.target == "gateway" else "work in hand or queued"
        flight = "" if r.in_flight is None else f"; {caught}: {r.in_flight}"
        result.facts[f"kill {i}: {r.kill.target}"] = (
            f"{r.kill.why}{trigger}{flight}; consuming again {r.back_after:.1f} s after the kill"
        )
    killed = {r.kill.target for r in records}
    never = sorted(set(stack.procs) - killed)
    result.facts["never killed"] = (
        ", ".join(never) or "none: every process was killed at least once"
    )
    back = all(stack.procs[r.kill.target].running for r in records)
    result.check(
        "every kill landed and its process came back",
        bool(records) and back,
        f"{len(records)} SIGKILLs over {', '.join(sorted(killed))}, each process consuming "
        "(or listening) again afterwards",
    )


def judge_builds(result: Result, specs: list[Spec], stack: Stack, registry_mark: int) -> None:
    pushes = manifest_pushes(stack.registry.log_path, since=registry_mark)
    twice = {ref: n for ref, n in pushes.items() if n > 1}
    sources = {f"{s.app}:{s.version}" for s in specs if s.kind == "source"}
    foreign = sorted(set(pushes) - sources)
    log = stack.logs / "build.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    started, skipped = (
        text.count('"build started"'),
        text.count("image already built from this source"),
    )
    result.facts["source builds"] = (
        f"{len(sources)} source deploys; {started} buildah builds started, "
        f"{sum(pushes.values())} manifests pushed; redeliveries that found their image "
        f"built: {skipped}"
    )
    result.check(
        "no image built twice",
        not twice and not foreign,
        f"{len(pushes)} tags pushed during the run, {len(twice)} of them more than once"
        + (f": {twice}" if twice else "")
        + (f"; pushes of tags no source deploy asked for: {foreign}" if foreign else ""),
    )


def spec_of(run: Run, deployment: str, specs: dict[str, Spec]) -> Spec | None:
    line = run.observer.timelines.get(deployment)
    requested = line.first("deploy.requested") if line else None
    if requested is None:
        return None
    request = requested.data.get("request") or {}
    return specs.get(f"{request.get('app')}@{request.get('version')}")


def judge_expected(result: Result, specs: list[Spec], run: Run, ended: dict[str, str]) -> None:
    """Kills alone must not fail a deploy: each committed, or was superseded by a newer version
    of its app; each deploy of a missing image failed with image_not_found."""
    by_key = {f"{s.app}@{s.version}": s for s in specs}
    wrong: list[str] = []
    for deployment, end in ended.items():
        spec = spec_of(run, deployment, by_key)
        failure = run.observer.timelines[deployment].failure() or {}
        reason = failure.get("reason")
        if spec is None:
            wrong.append(f"{deployment}: not a planned deploy")
        elif spec.kind == "missing" and reason != "image_not_found":
            wrong.append(f"{spec.app}: {end} {reason}")
        elif spec.kind != "missing" and end == "failed" and reason != "superseded":
            wrong.append(f"{spec.app} {spec.version}: failed {failure.get('stage')}/{reason}")
    result.check(
        "kills alone failed no deploy",
        not wrong,
        "every deploy committed, or was superseded by a newer version of its app, or (a missing "
        "image) failed with image_not_found" + (f"; not so: {wrong[:5]}" if wrong else ""),
    )


def judge_callbacks(result: Result, run: Run, ended: dict[str, str]) -> None:
    sink = run.stack.sink
    due = {d: e for d, e in ended.items() if e in ("failed", "ready")}
    missing = [d for d, e in due.items() if e not in sink.by_deployment.get(d, [])]
    extra = sum(max(0, len(v) - 1) for v in sink.by_deployment.values())
    result.facts["callbacks"] = (
        f"{sum(len(v) for v in sink.by_deployment.values())} received for {len(due)} ended "
        f"deployments that call back; {extra} repeated; {sink.bad_signatures} badly signed"
    )
    result.check(
        "every failed (or ready) deploy was called back",
        not missing and not sink.bad_signatures,
        f"{len(due) - len(missing)} of {len(due)} got their signed callback"
        + (f"; missing: {missing[:5]}" if missing else ""),
    )


async def judge_hooks_and_letters(result: Result, run: Run) -> None:
    hooks = [a for a in run.sender.tally.accepted if a.kind == "hook"]
    await run.observer.wait_until(
        lambda: all(run.observer.has(i) for a in hooks for i in a.event_ids), 10.0
    )
    lost = [i for a in hooks for i in a.event_ids if not run.observer.has(i)]
    result.check(
        "every accepted webhook's event is in the history",
        not lost,
        f"{len(hooks)} webhooks answered 202, {len(lost)} of their events missing",
    )
    letters = await run.observer.bus.dead_letters()
    owner = {e.id: e.deploymentid for e in run.observer.events}
    ended = {d: line.first(FAILED) is not None for d, line in run.observer.timelines.items()}
    stray = [x.id for x in letters if not ended.get(owner.get(x.event_id or "") or "", False)]
    result.facts["dead letters"] = _letters(letters)
    result.check(
        "every dead letter is a reported failure",
        not stray,
        f"{len(letters)} dead letters, {len(stray)} without a deploy.failed for their deployment",
    )


def _letters(letters: list[Any]) -> str:
    reasons = Counter(str(x.error).split(":", 1)[0] for x in letters)
    return f"{len(letters)}" + (
        f" ({', '.join(f'{r}: {n}' for r, n in reasons.items())})" if letters else ""
    )


def run_facts(run: Run, specs: list[Spec], load_seconds: float, settle: float) -> dict[str, Any]:
    tally = run.sender.tally
    deploys = [a for a in tally.accepted if a.kind == "deploy"]
    kinds = Counter(s.kind for s in specs)
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(tally.statuses.items()))
    return {
        "deploys sent": f"{len(specs)} ({', '.join(f'{n} {k}' for k, n in kinds.items())}) "
        f"for {len({s.app for s in specs})} apps in {load_seconds:.1f} s",
        "deploys accepted": len(deploys),
        "extra deployments": len(run.deployment_ids()) - len(deploys),
        "HTTP answers": statuses,
        "requests with no answer": f"{tally.connection_errors} refused connections, "
        f"{tally.ambiguous} cut off after sending",
        "webhooks accepted": sum(1 for a in tally.accepted if a.kind == "hook"),
        "events in the history": len(run.observer.events),
        "settled after the last request": f"{settle:.1f} s",
    }
