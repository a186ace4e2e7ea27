"""A whole relay under test, for the scenarios that deploy through it (kills, service outages).

``open_run`` gives a ``Run``: a private vhost on the shared RabbitMQ, the ``Stack`` (registry, Git
server, callback sink, relay processes), a history ``Observer`` and a signed-request ``Sender``;
leaving it stops and removes all of it. ``Run.judge`` applies the invariants every deploying
scenario shares: each accepted deploy ended, each failure says why, no deployment was committed
twice, every commit a deployment reports holds it, and the status API agrees with the history.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.broker import SharedVhost
from chaos.checks import GitHistory, git_history
from chaos.load import Accepted, Sender
from chaos.observe import COMMITTED, FAILED, READY, Observer, Timeline
from chaos.procs import adopting_orphans
from chaos.report import Result
from chaos.stack import Stack, StackConfig

SCRATCH_DOCKERFILE = "FROM scratch\nCOPY . /srv/\n"


def image_request(app: str, version: str, image: str, callback: str) -> dict[str, Any]:
    return {"app": app, "version": version, "image": image, "callback_url": callback}


def source_request(app: str, version: str, callback: str) -> dict[str, Any]:
    files = {"index.html": f"<p>{app} {version}</p>\n"}
    source = {"files": files, "dockerfile": SCRATCH_DOCKERFILE}
    return {"app": app, "version": version, "source": source, "callback_url": callback}


@dataclass
class Outcomes:
    ended: dict[str, str] = field(default_factory=dict)  # deployment id -> committed|ready|failed
    open: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    both: list[str] = field(default_factory=list)  # reported done, and later failed
    seconds: list[float] = field(default_factory=list)  # requested -> end


@dataclass
class Run:
    stack: Stack
    observer: Observer
    sender: Sender
    vhost: SharedVhost

    @property
    def ends(self) -> frozenset[str]:
        return frozenset({FAILED, READY if self.stack.kubernetes_workers else COMMITTED})

    @property
    def done(self) -> str:
        """The event after which a deploy must not fail any more: ``manifests.committed`` when
        nothing that can fail comes after the commit (no cluster: those stages are skipped),
        else ``deploy.ready`` (Flux or the rollout may still fail a committed deploy)."""
        return COMMITTED if self.stack.kube is None else READY

    def accepted_deploys(self) -> list[Accepted]:
        return [a for a in self.sender.tally.accepted if a.kind == "deploy"]

    def deployment_ids(self) -> list[str]:
        """Accepted deployments, and any other the history shows (a retried request whose first
        try was published before the gateway died)."""
        ids = [a.deployment_id for a in self.accepted_deploys() if a.deployment_id]
        extra = [d for d in self.observer.timelines if d not in set(ids)]
        return ids + extra

    async def settle(self, timeout: float) -> float:
        """Wait until every deployment ended; returns the seconds waited."""
        started = time.monotonic()
        ends = self.ends
        await self.observer.wait_until(
            lambda: all(self.observer.ended(d, ends) for d in self.deployment_ids()), timeout
        )
        return time.monotonic() - started

    def outcomes(self) -> Outcomes:
        found = Outcomes()
        for deployment in self.deployment_ids():
            line = self.observer.timelines.get(deployment, Timeline(deployment))
            end = _end(line, self.ends)
            if end is None:
                found.open.append(deployment)
                continue
            found.ended[deployment] = end
            failure = line.failure()
            if failure is not None:
                found.reasons[f"{failure.get('stage')}/{failure.get('reason')}"] += 1
                done, failed = line.first(self.done), line.first(FAILED)
                if done and failed and done.time <= failed.time:
                    found.both.append(deployment)
            found.seconds.append(_seconds(line, self.ends))
        return found

    async def judge(self, result: Result) -> Outcomes:
        """The invariants every deploying scenario shares; returns the outcomes."""
        found = self.outcomes()
        history = await git_history(self.stack.git.bare_path)
        self._check_ended(result, found)
        self._check_consistent(result, found)
        self._check_reasons(result)
        self._check_commits(result, found, history)
        await self._check_status_api(result, found)
        result.facts.update(_outcome_facts(found, history))
        return found

    def _check_ended(self, result: Result, found: Outcomes) -> None:
        ends = " or ".join(sorted(self.ends))
        result.check(
            "every accepted deploy reached an end",
            not found.open and len(found.ended) >= len(self.accepted_deploys()),
            f"{len(found.ended)} of {len(self.deployment_ids())} deployments ended in {ends}"
            + (f"; still open: {found.open[:5]}" if found.open else ""),
        )

    def _check_consistent(self, result: Result, found: Outcomes) -> None:
        done = "ready" if self.done == READY else "committed"
        result.check(
            f"no deployment reported {done} and then failed",
            not found.both,
            f"{len(found.both)} deployments with a {self.done} before a deploy.failed"
            + (f": {found.both[:3]}" if found.both else ""),
        )

    def _check_reasons(self, result: Result) -> None:
        failures = [
            line.failure() or {}
            for line in self.observer.timelines.values()
            if line.first(FAILED) is not None
        ]
        bare = [f for f in failures if not (f.get("reason") and f.get("stage"))]
        result.check(
            "every failed deploy says why",
            not bare,
            f"{len(failures)} deploy.failed events, {len(bare)} without a stage and reason",
        )

    def _check_commits(self, result: Result, found: Outcomes, history: GitHistory) -> None:
        twice = history.twice()
        result.check(
            "no deployment committed twice",
            not twice,
            f"{history.commits} commits name {len(history.by_deployment)} deployments; "
            f"{len(twice)} named by more than one commit" + (f": {twice}" if twice else ""),
        )
        wrong = []
        for deployment in found.ended:
            committed = self.observer.timelines[deployment].all(COMMITTED)
            shas = {str(e.data.get("commit")) for e in committed}
            if committed and not shas <= set(history.by_deployment.get(deployment, [])):
                wrong.append(deployment)
        result.check(
            "each reported commit holds its deployment",
            not wrong,
            f"{sum(1 for e in found.ended.values() if e != 'failed')} committed deployments, "
            f"{len(wrong)} whose manifests.committed names a commit that does not mention them",
        )

    async def _check_status_api(self, result: Result, found: Outcomes) -> None:
        """GET /deployments/{id} (the gateway's tracker, rebuilt from history after restarts)."""
        disagree = []
        session = self.sender.session

        def line_of(deployment: str) -> Timeline:
            return self.observer.timelines.get(deployment, Timeline(deployment))

        for deployment, end in found.ended.items():
            async with session.get(f"{self.stack.base_url}/deployments/{deployment}") as r:
                status = (await r.json()).get("status") if r.status == 200 else f"HTTP {r.status}"
            stopped = end == "failed" and not _replayed(line_of(deployment))
            expected = {"failed"} if stopped else {"reconciling", "rolling-out", "ready"}
            if status not in expected:
                disagree.append(f"{deployment}: history {end}, API {status}")
        result.check(
            "the status API agrees with the history",
            not disagree,
            f"{len(found.ended)} deployments asked, {len(disagree)} disagree"
            + (f": {disagree[:3]}" if disagree else ""),
        )


def _replayed(line: Timeline) -> bool:
    """Its failed work was replayed (``relay dlq replay``): stage events after the last failure."""
    failures = line.all(FAILED)
    if not failures:
        return False
    last = max(e.time for e in failures)
    return any(e.time > last and e.routing_key in (COMMITTED, READY) for e in line.events)


def _end(line: Timeline, ends: frozenset[str]) -> str | None:
    keys = line.routing_keys()
    if FAILED in keys:
        return "failed"
    if READY in keys and READY in ends:
        return "ready"
    if COMMITTED in keys and COMMITTED in ends:
        return "committed"
    return None


def _seconds(line: Timeline, ends: frozenset[str]) -> float:
    """From the first event to the first end (a later replay does not count)."""
    if not line.events:
        return 0.0
    end = next((e for e in line.events if e.routing_key in ends), line.events[-1])
    return (end.time - line.events[0].time).total_seconds()


def _outcome_facts(found: Outcomes, history: GitHistory) -> dict[str, Any]:
    ends = Counter(found.ended.values())
    seconds = sorted(found.seconds) or [0.0]
    return {
        "outcomes": ", ".join(f"{n} {end}" for end, n in sorted(ends.items())),
        "failure reasons": ", ".join(f"{r}: {n}" for r, n in found.reasons.most_common()) or "-",
        "commits in the GitOps repo": history.commits,
        "request → end, p50 / p95 / max": (
            f"{statistics.median(seconds):.2f} / {_pct(seconds, 0.95):.2f} / {seconds[-1]:.2f} s"
        ),
    }


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


@contextlib.asynccontextmanager
async def open_run(root: Path, **options: Any) -> AsyncIterator[Run]:
    """A running relay on a fresh vhost under ``root`` (``options``: ``StackConfig`` fields).

    Everything started is stopped on the way out and the vhost deleted; the files under ``root``
    (logs above all) stay for the secret scan and post-mortems: the caller removes them.
    """
    async with adopting_orphans():
        vhost = await SharedVhost().create()
        try:
            async with _running(root, vhost, options) as run:
                yield run
        finally:
            await vhost.delete()


@contextlib.asynccontextmanager
async def _running(root: Path, vhost: SharedVhost, options: dict[str, Any]) -> AsyncIterator[Run]:
    stack = Stack(root, StackConfig(broker_url=vhost.url, **options))
    observer = Observer(vhost.url)
    try:
        await stack.start_services()
        await observer.start()
        await stack.start_relay()
        async with Sender(
            stack.base_url,
            deploy_secret=stack.values["deploy"],
            github_secret=stack.values["github"],
            gitlab_token=stack.values["gitlab-token"],
        ) as sender:
            yield Run(stack=stack, observer=observer, sender=sender, vhost=vhost)
    finally:
        await stack.close()
        await observer.close()
