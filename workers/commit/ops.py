"""What the commit worker is asked to do to the tree, and what came of it.

An ``Op`` is one deploy (write an app) or one teardown (remove an app), carrying the request
time that decides which of two requests for the same app wins, and for a deploy its files once
rendered (the worker renders them as the deploy arrives, not when the batch is written). A
``Done`` is what a handler gets back once the batch holding its op was pushed: the commit that
holds the app's state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from workers.commit.render import AppSpec


@dataclass(frozen=True, kw_only=True)
class Op:
    kind: Literal["deploy", "delete"]
    app: str
    deployment_id: str
    requested_at: datetime
    version: str | None = None
    spec: AppSpec | None = None
    files: Mapping[str, bytes] | None = None  # render_app(spec), when rendered ahead

    def describe(self) -> str:
        what = f"{self.kind} {self.app}"
        if self.version:
            what += f" {self.version}"
        return f"{what} (deployment {self.deployment_id})"


@dataclass(frozen=True, kw_only=True)
class Applied:
    """What writing one op into the working tree did."""

    status: Literal["changed", "unchanged", "superseded"]
    paths: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class Done:
    """The outcome a handler publishes: the commit holding the app's state on the remote."""

    commit: str
    paths: tuple[str, ...]
    changed: bool
    pushes: int


def newest_per_app(ops: list[Op]) -> dict[str, Op]:
    """The winning op per app: the latest request time, later arrival breaking ties."""
    winners: dict[str, Op] = {}
    for op in ops:
        held = winners.get(op.app)
        if held is None or op.requested_at >= held.requested_at:
            winners[op.app] = op
    return winners


def same_request(a: Op, b: Op) -> bool:
    """Two deliveries of one request (a redelivery racing the original) share one outcome."""
    return (a.kind, a.deployment_id, a.requested_at) == (b.kind, b.deployment_id, b.requested_at)
