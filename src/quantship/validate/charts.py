"""Report charts as base64 PNG (matplotlib Agg), so report.html opens from disk with no files beside it."""

from __future__ import annotations

import base64
import io
import re
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402


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


def size_kl_chart(results: list[dict[str, Any]], max_kl: float) -> str | None:
    """Every variant's measured size against its gate KL mean: uniform recipes and per-tensor mixes on one plot."""
    points = [(float(r["bits_per_weight"]), float(r["checks"]["kl_mean"]["value"]), r["variant"], r["passed"])
              for r in results
              if r.get("bits_per_weight") is not None and (r["checks"].get("kl_mean") or {}).get("value") is not None]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for bits, kl, name, passed in points:
        mixed = "-mix" in name
        ax.scatter(bits, kl, s=70 if mixed else 50, marker="*" if mixed else ("o" if passed else "x"),
                   color="tab:green" if passed else "tab:red", zorder=3)
        ax.annotate(name, (bits, kl), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.axhline(max_kl, color="grey", lw=1, ls=":", label=f"gate KL mean {max_kl:g}")
    ax.set_yscale("log")
    ax.set_xlabel("bits per weight (measured)")
    ax.set_ylabel("KL mean vs baseline (nats, gate windows)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return _png(fig)


def allocation_map_chart(types: dict[str, str], title: str) -> str | None:
    """Block x tensor, coloured by the chosen type; tensors outside the blocks listed under the map."""
    cells, outside = {}, []
    for name, type_ in types.items():
        match = re.match(r"model\.layers\.(\d+)\.(.+)\.weight$", name)
        if match:
            cells[(int(match.group(1)), match.group(2).rsplit(".", 1)[-1])] = type_
        else:
            outside.append(f"{name.removesuffix('.weight')}: {type_}")
    if not cells:
        return None
    blocks = sorted({b for b, _ in cells})
    kinds = sorted({k for _, k in cells}, key=_kind_order)
    palette = sorted(set(cells.values()), key=_type_order)
    index = {t: i for i, t in enumerate(palette)}
    grid = [[index.get(cells.get((b, k)), -1) for b in blocks] for k in kinds]
    colours = ListedColormap([plt.get_cmap("viridis")(i / max(1, len(palette) - 1)) for i in range(len(palette))])
    fig, ax = plt.subplots(figsize=(max(6, 0.28 * len(blocks) + 2), 0.4 * len(kinds) + 1.8))
    ax.imshow(grid, aspect="auto", cmap=colours, vmin=-0.5, vmax=len(palette) - 0.5, interpolation="nearest")
    ax.set_xticks(range(len(blocks)), [str(b) for b in blocks], fontsize=7)
    ax.set_yticks(range(len(kinds)), kinds, fontsize=8)
    ax.set_xlabel("decoder block" + (f"    (outside the blocks: {'; '.join(outside)})" if outside else ""), fontsize=8)
    ax.set_title(title, fontsize=9)
    handles = [Patch(color=colours(index[t]), label=t) for t in palette]
    ax.legend(handles=handles, bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    return _png(fig)


_KINDS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _kind_order(kind: str) -> tuple[int, str]:
    return (_KINDS.index(kind) if kind in _KINDS else len(_KINDS), kind)


def _type_order(type_: str) -> tuple[float, str]:
    """Roughly by bits: the first number in the name (W4A16 -> 4, Q5_K -> 5, BF16 -> 16)."""
    match = re.search(r"(\d+)", type_)
    return (float(match.group(1)) if match else 99.0, type_)
