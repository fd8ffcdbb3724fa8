"""report.html: one static page for the run, every variant x check, charts embedded as PNG."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from quantship import layout
from quantship.layout import SELECTED
from quantship.rundir import RunDir, atomic_write_text, read_json
from quantship.validate.charts import kl_histogram_chart, sensitivity_chart, size_quality_chart
from quantship.validate.verdicts import VALIDATION_DIR, selection_path

REPORT = "report.html"
NOT_VERDICTS = {SELECTED, "baseline-long.json"}  # *.recovery.json lack "checks" and are skipped too
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


def load_recoveries(run_dir: RunDir) -> list[dict[str, Any]]:
    folder = run_dir.root / VALIDATION_DIR
    return [read_json(p) for p in sorted(folder.glob("*.recovery.json"))] if folder.is_dir() else []


def _recovery_table(record: dict[str, Any]) -> str:
    """One row per --recover step: the blocks it kept, its measured size, its verdict."""
    rows = "".join(
        f'<tr><td>{_esc(s["variant"])}</td><td>{len(s["kept_blocks"])}: {_esc(", ".join(_short(b) for b in s["kept_blocks"]))}</td>'
        f'<td>{_fmt(s.get("bits_per_weight"))}</td><td>{_pct(s.get("perplexity_delta"))}</td>'
        f'<td class="{"pass" if s.get("passed") else "fail"}">{_step_verdict(s)}</td></tr>'
        for s in record["steps"]
    )
    source = f'{_esc(record.get("format", ""))} {_esc(record.get("scheme", ""))}, {_fmt(record.get("bits_per_weight"))} bits/weight'
    return (
        f'<p><b>--recover {_esc(record["variant"])}</b> ({source}; budget {_fmt(record["budget_bits_per_weight"])} bits/weight, '
        f'blocks kept at {_esc(record.get("kept_type") or record.get("precision") or "—")}): {_esc(record["outcome"])}</p>'
        f'<table class="recovery"><tr><th>step variant</th><th>blocks kept</th><th>bits/weight</th><th>perplexity change</th>'
        f"<th>verdict</th></tr>{rows}</table>"
    )


def _short(block: str) -> str:
    return block.removeprefix("model.layers.")


def _pct(value: Any) -> str:
    return "—" if value is None else f"{100 * value:+.1f}%"


def _step_verdict(step: dict[str, Any]) -> str:
    if step.get("passed"):
        return "PASS"
    if step.get("over_budget"):
        return "over budget"
    failed = _esc(", ".join(step.get("failed_checks") or [step.get("error") or ""]))
    return f"FAIL {failed} (window screen)" if step.get("screened") else f"FAIL {failed}"


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
    sensitivity = ""
    for record in load_recoveries(run_dir):
        if "sensitivity" in record:  # absent when the variant was already over the budget
            layers = record["sensitivity"]["layers"]
            sensitivity += _img(
                sensitivity_chart(
                    layers, f"{record['variant']} ({record.get('format', '')} {record.get('scheme', '')}): per-block sensitivity"
                ),
                f"sensitivity of {record['variant']}",
            )
        sensitivity += _recovery_table(record)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>quantship validation: {_esc(run_dir.root.name)}</title>
<style>{_CSS}</style></head><body><h1>quantship validation — {_esc(run_dir.root.name)}</h1>
{_caveat(run_dir)}{selected}
<h2>Gate</h2><p>A check that could not be measured counts as failed.</p>{_check_table(results)}
<h2>Size vs quality</h2>{_img(size_quality_chart(results, max_delta), "bits per weight vs perplexity change")}
<h2>KL divergence</h2>{_img(kl_histogram_chart(results), "per-position KL histogram")}
<h2>Per-layer sensitivity</h2>{sensitivity or "<p>No sensitivity analysis in this run (run <code>quantship validate --recover</code>).</p>"}
<h2>Greedy divergence examples</h2>{_divergence_table(results)}
</body></html>
"""
    path = run_dir.root / REPORT
    atomic_write_text(path, page)
    return path
