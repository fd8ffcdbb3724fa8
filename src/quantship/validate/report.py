"""report.html: one static page for the run, every variant x check, charts embedded as PNG."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from quantship import layout
from quantship.layout import ALLOCATION_SUFFIX, SELECTED
from quantship.rundir import RunDir, atomic_write_text, read_json
from quantship.validate.charts import allocation_map_chart, kl_histogram_chart, size_kl_chart, size_quality_chart
from quantship.validate.verdicts import VALIDATION_DIR, selection_path

REPORT = "report.html"
NOT_VERDICTS = {SELECTED, "baseline-long.json"}  # allocation records lack "checks" and are skipped too
_CSS = """body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;vertical-align:top}.pass{background:#d9f2d9}.fail{background:#f7d4d4}
.caveat{background:#fff3cd;padding:.8em;border:1px solid #e0c060}pre{white-space:pre-wrap;margin:0;font-size:12px}"""


def load_results(run_dir: RunDir) -> list[dict[str, Any]]:
    folder = run_dir.root / VALIDATION_DIR
    results = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name not in NOT_VERDICTS and not path.name.startswith("."):
            data = read_json(path)
            if isinstance(data, dict) and "checks" in data:
                results.append(data)
    return results


def load_allocations(run_dir: RunDir) -> list[dict[str, Any]]:
    folder = run_dir.root / VALIDATION_DIR
    return [read_json(p) for p in sorted(folder.glob(f"*{ALLOCATION_SUFFIX}"))] if folder.is_dir() else []


def _allocation_section(record: dict[str, Any]) -> str:
    """One allocation: its gate runs as a table, the chosen build's per-tensor map."""
    rows = "".join(
        f'<tr><td>{_esc(r["variant"])}</td><td>{_fmt(r.get("target_kl"))}</td><td>{_fmt(r["predicted_kl"])}</td>'
        f'<td>{_fmt(r["predicted_bits_per_weight"])}</td><td>{_fmt(r.get("bits_per_weight"))}</td><td>{_fmt(r.get("kl_mean"))}</td>'
        f'<td>{_pct(r.get("perplexity_delta"))}</td><td>{_fmt(r.get("top1_agreement"))}</td><td>{_fmt(r.get("gate_ratio"))}</td>'
        f'<td class="{"pass" if r["passed"] else "fail"}">{_run_verdict(r)}</td></tr>'
        for r in record["runs"]
    )
    cap = record.get("max_bits_per_weight")
    head = (
        f'<p><b>allocation for {_esc(record["variant"])}</b> ({_esc(record.get("format", ""))}; target {_esc(record["mode"])}'
        f'{"" if cap is None else f", at most {_fmt(cap)} bits/weight"}; sensitivity on {_fmt(record["sensitivity"]["tokens"])} '
        f'calibration tokens): {_esc(record["outcome"])}</p>'
    )
    if record.get("gap"):
        head += f'<p class="caveat">{_esc(record["gap"]["text"])}</p>'
    table = (
        '<table class="allocation"><tr><th>build</th><th>target KL</th><th>predicted KL</th><th>predicted bits/weight</th>'
        '<th>bits/weight</th><th>gate KL mean</th><th>perplexity change</th><th>top-1</th><th>gate/limit</th><th>verdict</th></tr>'
        f"{rows}</table>"
    )
    chosen = next((r for r in record["runs"] if r["variant"] == record.get("recovered")), record["runs"][-1] if record["runs"] else None)
    chart = "" if chosen is None else _img(
        allocation_map_chart(chosen["types"], f"{chosen['variant']}: type of every tensor"), f"tensor map of {chosen['variant']}"
    )
    return head + table + chart


def _run_verdict(run: dict[str, Any]) -> str:
    return "PASS" if run["passed"] else "FAIL " + _esc(", ".join(run["failed_checks"]))


def _pct(value: Any) -> str:
    return "—" if value is None else f"{100 * value:+.1f}%"


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.4g}" if isinstance(value, float) else _esc(value)


def _check_table(results: list[dict[str, Any]]) -> str:
    names = list(dict.fromkeys(n for r in results for n in r["checks"]))
    head = "".join(f"<th>{_esc(n)}</th>" for n in names)
    rows = []
    for r in results:
        cells = []
        for n in names:
            c = r["checks"].get(n)
            if c is None:
                cells.append('<td class="fail">missing</td>')
                continue
            text = f"error: {_esc(c['error'])}" if c.get("error") else f"{_fmt(c['value'])} ({c['comparison']} {_fmt(c['threshold'])})"
            cells.append(f'<td class="{"pass" if c["passed"] else "fail"}">{text}</td>')
        verdict = "PASS" if r["passed"] else "FAIL"
        rows.append(
            f'<tr><td>{_esc(r["variant"])}</td><td>{_esc(r.get("format"))} / {_esc(r.get("runtime"))}</td>'
            f'<td>{_fmt(r.get("bits_per_weight"))}</td><td class="{"pass" if r["passed"] else "fail"}">{verdict}</td>{"".join(cells)}</tr>'
        )
    return (
        f'<table id="checks"><tr><th>variant</th><th>format / runtime</th><th>bits/weight</th><th>verdict</th>{head}</tr>'
        f'{"".join(rows)}</table>'
    )


def _divergence_table(results: list[dict[str, Any]], per_variant: int = 3) -> str:
    rows = []
    for r in results:
        greedy = (r["checks"].get("greedy") or {}).get("detail", {})
        for row in [x for x in greedy.get("rows", []) if not x["exact"]][:per_variant]:
            kind = "regression (outside top-k)" if row["regression"] else "near-tie flip"
            rows.append(
                f"<tr><td>{_esc(r['variant'])}</td><td>{_esc(row['id'])}</td><td>{_esc(row.get('divergence'))}: {kind}</td>"
                f"<td><pre>{_esc(row['baseline_text'])}</pre></td><td><pre>{_esc(row['variant_text'])}</pre></td></tr>"
            )
    if not rows:
        return "<p>No variant diverged from the baseline's greedy references.</p>"
    return (
        '<table id="divergences"><tr><th>variant</th><th>prompt</th><th>first divergence (token)</th>'
        f'<th>baseline</th><th>variant</th></tr>{"".join(rows)}</table>'
    )


def _img(b64: str | None, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{b64}">' if b64 else f"<p>{_esc(alt)}: no data.</p>"


def _caveat(run_dir: RunDir) -> str:
    try:
        checkpoint = Path(read_json(run_dir.root / layout.BASELINE / layout.BASELINE_JSON)["checkpoint"]["path"])
        note = json.loads((checkpoint / "quantship-source.json").read_text(encoding="utf-8")).get("note")
    except (OSError, KeyError, ValueError):
        return ""
    if not note:
        return ""
    return f'<p class="caveat" id="caveat"><b>Demo model caveat:</b> {_esc(note)}.</p>'


def write_report(run_dir: RunDir) -> Path:
    results = load_results(run_dir)
    max_delta = results[0]["thresholds"]["max_perplexity_delta"] if results else 0.1
    selected = ""
    selected_path = selection_path(run_dir)
    if selected_path.exists():
        sel = read_json(selected_path)
        selected = f"<p id=\"selected\"><b>Selected ({_esc(sel['policy'])}):</b> {_esc(sel['selected'])} — {_esc(sel['reason'])}</p>"
    allocations = "".join(_allocation_section(record) for record in load_allocations(run_dir))
    max_kl = results[0]["thresholds"].get("max_kl_mean", 0.05) if results else 0.05
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>quantship validation: {_esc(run_dir.root.name)}</title>
<style>{_CSS}</style></head><body><h1>quantship validation — {_esc(run_dir.root.name)}</h1>
{_caveat(run_dir)}{selected}
<h2>Gate</h2><p>A check that could not be measured counts as failed.</p>{_check_table(results)}
<h2>Size vs quality</h2>{_img(size_quality_chart(results, max_delta), "bits per weight vs perplexity change")}
<h2>Size vs KL</h2>{_img(size_kl_chart(results, max_kl), "bits per weight vs KL mean")}
<h2>KL divergence</h2>{_img(kl_histogram_chart(results), "per-position KL histogram")}
<h2>Per-tensor mixed precision</h2>{allocations or "<p>No allocation in this run (run <code>quantship validate --recover</code>).</p>"}
<h2>Greedy divergence examples</h2>{_divergence_table(results)}
</body></html>
"""
    path = run_dir.root / REPORT
    atomic_write_text(path, page)
    return path
