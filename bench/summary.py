"""What every benchmark hands to ``make bench``: metrics with their baseline, ratio and goal.

A ``Metric`` is one number measured in a run, with the baseline measured in the same run (when
there is one), the goal it is held to (when the issues set one) and whether it was met. Each
benchmark module exposes ``collect(quick: bool) -> list[Metric]``; ``bench.all`` runs them, prints
one table and appends one dated row per metric to the "Summary runs" table of BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "BENCHMARKS.md"
SUMMARY_HEADING = "## Summary runs"
COLUMNS = "| date | machine | metric | value | baseline | ratio | goal | met? |"


@dataclass(frozen=True, kw_only=True)
class Goal:
    """``on`` the value or the ratio, ``op`` ``<=`` or ``>=``, against ``target``."""

    on: Literal["value", "ratio"]
    op: Literal["<=", ">="]
    target: float

    def met(self, value: float, ratio: float | None) -> bool | None:
        seen = value if self.on == "value" else ratio
        if seen is None:
            return None
        return seen <= self.target if self.op == "<=" else seen >= self.target

    def text(self, unit: str) -> str:
        return (
            f"ratio {self.op} {self.target:g}x"
            if self.on == "ratio"
            else (f"{self.op} {self.target:g} {unit}".rstrip())
        )


@dataclass(frozen=True, kw_only=True)
class Metric:
    bench: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    goal: Goal | None = None
    note: str = ""
    load: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        return None if self.goal is None else self.goal.met(self.value, self.ratio)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Metric:
        goal = raw.pop("goal", None)
        return cls(**raw, goal=Goal(**goal) if goal else None)


def skipped(bench: str, why: str) -> Metric:
    """A benchmark that could not run here, said in the table rather than hidden."""
    return Metric(bench=bench, name=f"skipped: {why}", value=float("nan"), unit="")


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    models = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
    cpu = (models[0] if models else platform.processor()).split(" ")[:2]
    return f"{' '.join(cpu)} x{os.cpu_count()}, Python {platform.python_version()}"


def number(value: float | None, unit: str = "") -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    shown = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{shown} {unit}".rstrip()


def cells(metric: Metric) -> list[str]:
    base = number(metric.baseline, metric.unit)
    if metric.baseline is not None and metric.baseline_name:
        base = f"{base} ({metric.baseline_name})"
    ratio = metric.ratio
    met = {True: "yes", False: "**no**", None: "-"}[metric.met]
    name = f"{metric.bench}: {metric.name}"
    if metric.note:
        name += f" ({metric.note})"
    return [
        name,
        number(metric.value, metric.unit),
        base,
        "-" if ratio is None else f"{ratio:.2f}x",
        metric.goal.text(metric.unit) if metric.goal else "-",
        met,
    ]


def table(metrics: list[Metric]) -> str:
    rows = [
        "| metric | value | baseline | ratio | goal | met? | load avg |",
        "|---|---|---|---|---|---|---|",
    ]
    rows += ["| " + " | ".join([*cells(m), m.load or "-"]) + " |" for m in metrics]
    return "\n".join(rows)


def record(metrics: list[Metric], *, when: datetime | None = None, path: Path = RESULTS) -> None:
    """Append one dated row per metric under "Summary runs" in BENCHMARKS.md."""
    stamp = f"{(when or datetime.now(UTC)):%Y-%m-%d %H:%M} UTC"
    where = machine()
    rows = [
        "| " + " | ".join([stamp, f"{where}, load {m.load or '?'}", *cells(m)]) + " |"
        for m in metrics
    ]
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.rstrip("\n").split("\n")
    if SUMMARY_HEADING not in lines:
        lines += [
            "",
            SUMMARY_HEADING,
            "",
            "One row per metric per `make bench` run (`python -m bench.all`); ratio = value / "
            "baseline, both measured in the same run; load = the machine's load average (1, 5, "
            "15 min) when that benchmark started.",
            "",
            COLUMNS,
            "|---|---|---|---|---|---|---|---|",
        ]
    start = lines.index(SUMMARY_HEADING) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    while end > start and not lines[end - 1].strip():
        end -= 1
    lines[end:end] = rows
    path.write_text("\n".join(lines) + "\n")


def dump(metrics: list[Metric]) -> str:
    return json.dumps([m.to_json() for m in metrics])


def parse(text: str) -> list[Metric]:
    return [Metric.from_json(raw) for raw in json.loads(text)]
