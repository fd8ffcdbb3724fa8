"""A model card (README.md) in the shipped variant's folder: what it is, how it was made and measured, how to serve it.

Written when a variant is selected to ship, from the run directory's own records
(variant manifest, calibration stats, validation verdict, allocation record), so the
folder can be copied anywhere and still say where it came from. It sits beside the
manifest, not in it: the manifest's file hashes keep describing the weights.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from quantship import layout
from quantship.layout import ALLOCATION_SUFFIX
from quantship.rundir import RunDir, atomic_write_text, read_json
from quantship.validate.verdicts import VALIDATION_DIR, verdict_path

CARD = "README.md"


def _optional_json(path: Path) -> dict[str, Any] | None:
    try:
        return read_json(path)
    except (FileNotFoundError, ValueError):
        return None


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _checks_table(verdict: dict[str, Any]) -> list[str]:
    rows = ["| check | measured | threshold | verdict |", "|---|---|---|---|"]
    for name, check in verdict["checks"].items():
        measured = _fmt(check["value"]) if check.get("error") is None else f"error: {check['error']}"
        rows.append(f"| {name} | {measured} | {check['comparison']} {_fmt(check['threshold'])} | {'pass' if check['passed'] else 'FAIL'} |")
    return rows


def _allocation_lines(run: RunDir, variant: str) -> list[str]:
    for path in sorted((run.root / VALIDATION_DIR).glob(f"*{ALLOCATION_SUFFIX}")):
        record = _optional_json(path) or {}
        if record.get("recovered") == variant:
            chosen = next(r for r in record["runs"] if r["variant"] == variant)
            histogram = Counter(chosen["types"].values())
            return [
                "## Mixed precision",
                "",
                f"A type for every tensor, chosen from measured per-tensor sensitivity for the failing variant "
                f"`{record['variant']}`: {', '.join(f'{n}x {t}' for t, n in sorted(histogram.items()))} "
                f"({record['gate_runs']} gate run(s); `validation/{path.name}` records each and every tensor's type).",
                "",
            ]
    return []


def model_card(run: RunDir, variant: str, serve_command: str) -> str:
    manifest = run.manifest(layout.variant(variant)) or {}
    verdict = read_json(verdict_path(run, variant))
    baseline = _optional_json(run.root / layout.BASELINE / layout.BASELINE_JSON) or {}
    calibration = (run.manifest(layout.CALIBRATION) or {}).get("stats") or {}
    perplexity = verdict["checks"].get("perplexity", {}).get("detail", {})
    lines = [
        f"# {variant}",
        "",
        f"Quantized with quantship from `{(baseline.get('checkpoint') or {}).get('path', 'the baseline checkpoint')}`.",
        f"Verdict: **{'passed' if verdict['passed'] else 'failed'}** every check of the quality gate "
        f"(validated {verdict.get('validated_at')}).",
        "",
        "| | |",
        "|---|---|",
        f"| method | {_fmt(manifest.get('method'))} |",
        f"| scheme | {_fmt(manifest.get('scheme'))} |",
        f"| format | {_fmt(manifest.get('format'))} |",
        f"| bits per weight | {_fmt(manifest.get('bits_per_weight'))} |",
        f"| size | {_fmt(manifest.get('size_bytes'))} bytes |",
        f"| perplexity | {_fmt(perplexity.get('variant'))} (baseline {_fmt(perplexity.get('baseline'))}) |",
        "",
        "## Recipe",
        "",
        "```json",
        json.dumps(manifest.get("params", {}), indent=2, sort_keys=True, default=str),
        "```",
        "",
        *_allocation_lines(run, variant),
        "## Calibration data",
        "",
        (
            f"{_fmt(calibration.get('samples'))} windows x {_fmt(calibration.get('seq_len'))} tokens from "
            f"`{_fmt(calibration.get('source'))}` (vocabulary coverage {calibration.get('vocab_coverage', 0):.1%})."
            if calibration else "No calibration set in this run."
        ),
        "",
        "## Validation",
        "",
        *_checks_table(verdict),
        "",
        "## Serving",
        "",
        "```sh",
        serve_command,
        "```",
        "",
        "## Provenance",
        "",
        f"- variant fingerprint `{manifest.get('fingerprint')}`",
        f"- baseline fingerprint `{verdict.get('baseline_fingerprint')}`",
        f"- tools: {', '.join(f'{k} {v}' for k, v in sorted((manifest.get('tool_versions') or {}).items()))}",
        "",
    ]
    return "\n".join(lines)


def write_model_card(run: RunDir, variant: str) -> Path:
    """README.md into variants/<variant>/; the serving line is `quantship serve` for this run."""
    command = f"quantship serve --run-dir {run.root} --variant {variant}"
    path = run.stage_dir(layout.variant(variant)) / CARD
    atomic_write_text(path, model_card(run, variant, command))
    return path
