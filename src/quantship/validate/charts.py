"""Report charts as base64 PNG (matplotlib Agg), so report.html opens from disk with no files beside it."""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def pareto_front(points: list[tuple[float, float, str]]) -> list[str]:
    """Names of the points no other point beats on both bits/weight and perplexity delta (lower is better)."""
    front = []
    for bits, delta, name in points:
        dominated = any(b <= bits and d <= delta and (b, d) != (bits, delta) for b, d, _ in points)
        if not dominated:
            front.append(name)
    return front


def size_quality_chart(results: list[dict[str, Any]], max_delta: float) -> str | None:
    points = []
    for r in results:
        check = r["checks"].get("perplexity") or {}
        if r.get("bits_per_weight") is not None and check.get("value") is not None:
            points.append((float(r["bits_per_weight"]), 100 * float(check["value"]), r["variant"]))
    if not points:
        return None
    front = set(pareto_front(points))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for bits, delta, name in points:
        passed = next(r["passed"] for r in results if r["variant"] == name)
        ax.scatter(bits, delta, s=60, marker="o" if passed else "x", color="tab:green" if passed else "tab:red", zorder=3)
        ax.annotate(name, (bits, delta), textcoords="offset points", xytext=(5, 4), fontsize=8)
    line = sorted((b, d) for b, d, n in points if n in front)
    ax.plot([b for b, _ in line], [d for _, d in line], "--", color="tab:blue", label="Pareto front", zorder=2)
    ax.axhline(100 * max_delta, color="grey", lw=1, ls=":", label=f"gate +{100 * max_delta:.0f}%")
    ax.set_xlabel("bits per weight (measured)")
    ax.set_ylabel("perplexity change vs baseline (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def kl_histogram_chart(results: list[dict[str, Any]]) -> str | None:
    rows = [r for r in results if r.get("kl_histogram")]
    if not rows:
        return None
    edges = rows[0]["kl_histogram"]["edges"]
    labels = [f"<{e:g}" if e is not None else "more" for e in edges[1:]]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        counts = r["kl_histogram"]["counts"]
        total = max(1, sum(counts))
        ax.bar([x + i * width for x in range(len(counts))], [c / total for c in counts], width=width, label=r["variant"])
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(labels))], labels, rotation=45, fontsize=8)
    ax.set_xlabel("per-position KL (nats)")
    ax.set_ylabel("share of positions")
    ax.legend(fontsize=8)
    return _png(fig)


def sensitivity_chart(layers: list[dict[str, Any]], title: str) -> str | None:
    if not layers:
        return None
    top = sorted(layers, key=lambda x: -x["score"])[:30]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.25 * len(top))))
    ax.barh([x["layer"] for x in top][::-1], [x["score"] for x in top][::-1], color="tab:orange")
    ax.set_xlabel("KL divergence when only this layer is quantized (nats)")
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    return _png(fig)
