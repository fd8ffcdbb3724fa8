"""The side-by-side table printed after a run (rich), one table per load level."""

from __future__ import annotations

from collections.abc import Callable

from rich.table import Table

from quantship.bench.compare import ratio
from quantship.bench.models import BenchReport, LevelSummary


def _ms(path: str) -> Callable[[LevelSummary], float | None]:
    field, stat = path.split(".")
    return lambda s: getattr(getattr(s, field), stat) if getattr(s, field) is not None else None


_ROWS: tuple[tuple[str, Callable[[LevelSummary], float | None], str], ...] = (
    ("TTFT p50 (ms)", _ms("ttft_ms.p50"), "{:.1f}"),
    ("TTFT p95 (ms)", _ms("ttft_ms.p95"), "{:.1f}"),
    ("TTFT p99 (ms)", _ms("ttft_ms.p99"), "{:.1f}"),
    ("ITL p50 (ms)", _ms("itl_ms.p50"), "{:.2f}"),
    ("ITL p99 (ms)", _ms("itl_ms.p99"), "{:.2f}"),
    ("TPOT p50 (ms)", _ms("tpot_ms.p50"), "{:.2f}"),
    ("E2E p50 (ms)", _ms("e2e_ms.p50"), "{:.1f}"),
    ("E2E p95 (ms)", _ms("e2e_ms.p95"), "{:.1f}"),
    ("E2E p99 (ms)", _ms("e2e_ms.p99"), "{:.1f}"),
    ("output tokens/s", lambda s: s.output_tokens_per_s, "{:.1f}"),
    ("requests/s", lambda s: s.requests_per_s, "{:.2f}"),
    ("goodput (share)", lambda s: s.goodput.share if s.goodput else None, "{:.1%}"),
)


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _checks(summary: LevelSummary) -> str:
    if not summary.server_checks:
        return "n/a"
    parts = []
    for check in summary.server_checks:
        diff = "-" if check.relative_diff is None else f"{check.relative_diff:+.1%}"
        parts.append(f"{check.metric} {diff} {'ok' if check.agree else 'DIFFERS'}")
    return ", ".join(parts)


def level_tables(report: BenchReport) -> list[Table]:
    unit = "concurrency" if report.settings.mode == "concurrency" else "req/s"
    labels = [t.label for t in report.targets]
    tables = []
    for level in report.settings.levels:
        by_label = {s.endpoint: s for s in report.summaries if s.level == level}
        table = Table(title=f"{unit} {level:g}", title_justify="left")
        table.add_column("metric")
        for label in labels:
            table.add_column(label, justify="right")
        if len(labels) == 2:
            table.add_column(f"{labels[1]} / {labels[0]}", justify="right")
        summaries = [by_label[label] for label in labels]
        table.add_row("ok / sent", *[f"{s.ok} / {s.requests}" for s in summaries], *([""] if len(labels) == 2 else []))
        table.add_row(
            "errors",
            *[", ".join(f"{k} {v}" for k, v in s.error_kinds.items()) or "0" for s in summaries],
            *([""] if len(labels) == 2 else []),
        )
        for name, get, pattern in _ROWS:
            values = [get(s) for s in summaries]
            cells = [_fmt(v, pattern) for v in values]
            if len(labels) == 2:
                cells.append(_fmt(ratio(values[0], values[1]), "{:.2f}x"))
            table.add_row(name, *cells)
        table.add_row("vs server /metrics", *[_checks(s) for s in summaries], *([""] if len(labels) == 2 else []))
        tables.append(table)
    return tables
