"""The plan as a rich table: every candidate, its budget, and the chosen command line."""

from __future__ import annotations

import shlex

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from quantship.plan.measure import MeasureReport
from quantship.plan.memory import GIB
from quantship.plan.planner import Candidate, Plan

STATUS_STYLE = {"ok": "green", "slow": "yellow", "refused": "red"}


def gib(value: int | float | None) -> str:
    return "-" if value is None else f"{value / GIB:.1f}"


def render(plan: Plan, model_path: str) -> Group:
    hw, geo, t = plan.hardware, plan.model, plan.traffic
    head = Text.assemble(
        (f"{geo.name}", "bold"),
        f"  {geo.architecture}, {plan.params.total / 1e9:.2f} B params ({plan.params.source}), "
        f"{geo.layers} layers, {geo.heads} heads / {geo.kv_heads} KV heads x {geo.head_dim}\n",
        (f"{hw.name}", "bold"),
        f"  {hw.memory_gib:.1f} GiB, "
        + (f"SM {hw.compute_capability:.1f}, " if hw.kind == "gpu" else _cpu_line(hw))
        + (f"{hw.bandwidth_gbs:g} GB/s ({hw.bandwidth_source})" if hw.bandwidth_gbs else "bandwidth unknown")
        + f", {plan.devices} device(s)\n",
        f"traffic: {t.concurrency} concurrent x {t.context} tokens, KV cache {plan.kv_cache_dtype}; "
        f"order: {plan.ranking.basis} ({plan.ranking.source})",
    )
    reasons = [
        Text(f"{rank}. {c.format} on {c.stack} ({c.status}): {c.reason}", style=STATUS_STYLE[c.status])
        for rank, c in enumerate(plan.candidates, 1)
        if c.reason
    ]
    notes = [Text(f"note: {n}", style="dim") for n in plan.notes]
    legend = Text(
        "replicas (naive): per device, and weights-only count in brackets; ctx seqs: full-context sequences the "
        "KV cache holds; tok/s: measured decode, ~N a shipped prior (not measured), or ≤ a memory-bandwidth upper bound",
        style="dim",
    )
    return Group(head, _table(plan), legend, *reasons, _chosen(plan, model_path), *notes)


def _cpu_line(hw) -> str:
    return f"{hw.cores} cores, {', '.join(hw.cpu_flags) or 'no AVX'}, "


def _table(plan: Plan) -> Table:
    table = Table(show_lines=False, header_style="bold")
    for column in ("#", "format", "stack", "status", "weights GiB", "KV GiB", "overhead GiB", "GiB/device",
                   "TP", "replicas (naive)", "util", "ctx seqs", "tok/s"):
        table.add_column(column, justify="right" if column[0].isdigit() or "GiB" in column else "left")
    for rank, c in enumerate(plan.candidates, 1):
        table.add_row(*_row(rank, c))
    return table


def _row(rank: int, c: Candidate) -> list[str]:
    status = f"[{STATUS_STYLE[c.status]}]{c.status}[/]"
    if c.fit is None:
        return [str(rank), c.format, c.stack, status, *["-"] * 9]
    f, b = c.fit, c.fit.budget
    if c.measured_tok_s is not None:
        rate = f"{c.measured_tok_s:g}"
    elif c.prior_tok_s is not None:
        rate = f"~{c.prior_tok_s:g}"
    else:
        rate = f"≤{c.decode_roofline_tok_s:,.0f}" if c.decode_roofline_tok_s else "-"
    return [
        str(rank), c.format, c.stack, status,
        gib(c.weights_bytes), gib(b.kv_bytes), gib(b.overhead_bytes), gib(b.total_bytes),
        str(f.tensor_parallel or "-"), f"{f.replicas_per_device} ({f.replicas_weights_only})",
        f"{f.memory_utilization:.2f}", str(f.max_full_context_seqs), rate,
    ]


def _chosen(plan: Plan, model_path: str) -> Panel:
    c = plan.chosen
    settings = c.fit.settings
    model_path = c.artifact or (model_path if c.format == "bf16" else f"<{c.format} variant>")
    env = " ".join(f"{k}={v}" for k, v in settings.env.items())
    program = {"vllm": ["vllm", "serve", model_path], "llama.cpp": ["llama-server", "-m", model_path]}.get(c.stack)
    command = shlex.join(program + settings.args) if program else f"transformers ({c.format}); no server flags"
    body = (
        f"{c.format} on {c.stack}: TP {c.fit.tensor_parallel}, {c.fit.replicas_per_device} replica(s) per device, "
        f"{c.fit.replicas_total} on {plan.devices} device(s)\n{(env + ' ') if env else ''}{command}"
    )
    return Panel(body, title="plan", border_style="green")


def measured_table(report: MeasureReport) -> Group:
    """What `plan --measure` served and measured here, and what it left out and why."""
    s = report.settings
    table = Table(title=f"measured on this machine: {s.concurrency} concurrent x {s.max_tokens} tokens, "
                  f"{s.requests} requests per format", header_style="bold")
    for column in ("format", "stack", "served", "tok/s", "TTFT p50 ms", "TPOT p50 ms", "ok", "verdict"):
        table.add_column(column, justify="right" if column in {"tok/s", "ok"} or "ms" in column else "left")
    for m in sorted(report.measured, key=lambda m: -m.tokens_per_s):
        table.add_row(
            m.format, m.stack, m.variant or "checkpoint", f"{m.tokens_per_s:g}", _ms(m.ttft_p50_ms),
            _ms(m.tpot_p50_ms), f"{m.ok}/{m.requests}", m.verdict,
        )
    skipped = [Text(f"not measured: {n.name}" + (f" ({n.format})" if n.format else "") + f": {n.reason}",
                    style="dim") for n in report.not_measured]
    benches = Text("benches: " + ", ".join(m.bench_summary for m in report.measured), style="dim")
    return Group(table, Text(report.note, style="dim"), benches, *skipped)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def print_plan(plan: Plan, model_path: str, measured: MeasureReport | None = None, console: Console | None = None) -> None:
    console = console or Console()
    if measured is not None:
        console.print(measured_table(measured))
    console.print(render(plan, model_path))
