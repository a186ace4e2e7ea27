"""``make bench``'s summary: goals judged on the value or the ratio, rows appended in place."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bench.summary import SUMMARY_HEADING, Goal, Metric, dump, parse, record, table

WHEN = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def gateway(value: float, baseline: float) -> Metric:
    return Metric(
        bench="gateway",
        name="req/s",
        value=value,
        unit="req/s",
        baseline=baseline,
        baseline_name="bare aiohttp",
        goal=Goal(on="ratio", op=">=", target=0.3),
        load="1.0 1.0 1.0",
    )


def test_goals_are_judged_on_the_ratio_or_the_value() -> None:
    assert gateway(300, 1000).met is True
    assert gateway(299, 1000).met is False
    p99 = Metric(
        bench="g", name="p99", value=26, unit="ms", goal=Goal(on="value", op="<=", target=25)
    )
    assert p99.met is False
    assert Metric(bench="g", name="no goal", value=1, unit="").met is None
    no_baseline = Metric(
        bench="g", name="x", value=1, unit="", goal=Goal(on="ratio", op="<=", target=3)
    )
    assert no_baseline.met is None


def test_metrics_survive_the_trip_from_the_child_process() -> None:
    metrics = [gateway(500, 4000), Metric(bench="b", name="n", value=1.5, unit="s")]
    assert parse(dump(metrics)) == metrics


def test_rows_are_appended_under_the_summary_heading_before_the_next_section(
    tmp_path: Path,
) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Gateway load\n\ntext\n")
    record([gateway(500, 4000)], when=WHEN, path=path)
    record([gateway(1500, 4000)], when=WHEN, path=path)
    lines = path.read_text().splitlines()
    rows = [ln for ln in lines if ln.startswith("| 2026-11-26 10:00 UTC")]
    assert len(rows) == 2
    assert "0.12x" in rows[0] and "**no**" in rows[0]
    assert "0.38x" in rows[1] and "| yes |" in rows[1]
    assert lines.index(SUMMARY_HEADING) < lines.index(rows[0]) < lines.index(rows[1])
    assert "## Gateway load" in lines and "text" in lines


def test_the_printed_table_has_one_row_per_metric() -> None:
    text = table([gateway(500, 4000), gateway(1500, 4000)])
    assert len(text.splitlines()) == 4
