"""Plots for the run directory: latency CDFs and throughput against load."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from quantship.bench.models import BenchReport, RequestRecord  # noqa: E402

_COLORS = ("tab:blue", "tab:orange")
_STYLES = ("-", "--", ":", "-.")


def _save(fig, path: Path) -> Path:
    """Save via a temporary name so that a reader never sees half a PNG."""
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def latency_cdfs(report: BenchReport, records: list[RequestRecord], path: Path) -> Path:
    """Empirical CDFs of TTFT and end-to-end latency, one line per endpoint and level."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    measured = [r for r in records if r.phase == "measure" and r.ok]
    levels = report.settings.levels
    unit = "conc" if report.settings.mode == "concurrency" else "req/s"
    for t, target in enumerate(report.targets):
        for li, level in enumerate(levels):
            mine = [r for r in measured if r.endpoint == target.label and r.level == level]
            for ax, attr in zip(axes, ("ttft_s", "e2e_s"), strict=True):
                values = np.sort([getattr(r, attr) * 1000.0 for r in mine if getattr(r, attr) is not None])
                if values.size == 0:
                    continue
                share = np.arange(1, values.size + 1) / values.size
                ax.step(
                    values,
                    share,
                    where="post",
                    color=_COLORS[t % 2],
                    linestyle=_STYLES[li % len(_STYLES)],
                    alpha=1.0 if len(levels) == 1 else 0.5 + 0.5 * (li + 1) / len(levels),
                    label=f"{target.label} @ {level:g} {unit}",
                )
    for ax, title in zip(axes, ("time to first token", "end-to-end latency"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("ms")
        ax.set_ylabel("share of requests")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def throughput(report: BenchReport, path: Path) -> Path:
    """Output tokens/s and median time per output token against the load level."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    xlabel = "concurrency" if report.settings.mode == "concurrency" else "request rate (req/s)"
    for t, target in enumerate(report.targets):
        mine = sorted((s for s in report.summaries if s.endpoint == target.label), key=lambda s: s.level)
        x = [s.level for s in mine]
        axes[0].plot(x, [s.output_tokens_per_s for s in mine], "o-", color=_COLORS[t % 2], label=target.label)
        tpot = [s.tpot_ms.p50 if s.tpot_ms else np.nan for s in mine]
        axes[1].plot(x, tpot, "o-", color=_COLORS[t % 2], label=target.label)
    for ax, title, ylabel in zip(axes, ("throughput", "time per output token (p50)"), ("output tokens/s", "ms"), strict=True):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if len(report.settings.levels) > 1 and max(report.settings.levels) / min(report.settings.levels) >= 8:
            ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)
