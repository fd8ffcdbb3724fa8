"""Quality per bit: llama.cpp's uniform recipes, llm-compressor GPTQ and quantship's per-tensor mixes, in one run.

Every variant is validated by `quantship.validate` against the same baseline windows
with the default gate (perplexity +10 %, KL mean 0.05, top-1 0.90, tasks -5 %, greedy,
probes, long context):

- peers: llama.cpp Q4_K_S, Q4_K_M, Q5_K_M and Q6_K, each with the run's importance
  matrix; llm-compressor GPTQ W4A16 at the largest group size that divides every layer;
- quantship: the per-tensor allocation (`target: budget`) at each GGUF peer's measured
  bits/weight, and the `target: gate` allocation (the smallest mix that passes).

The sensitivity the allocation uses is measured on calibration windows; the gate scores
the baseline's evaluation windows. Then every variant's window checks (perplexity, KL,
top-1) are measured again on a second corpus neither the allocation nor its settings
ever saw: the docstrings of Python's own standard library (read from the installed
sources with `ast`, no import, no download), as a second set of rows.

Writes benchmarks/results/quality.json: `rows`, `rows_second_corpus`, `matched` (the
mix at Q4_K_M + imatrix's size against it) and `smallest_passing` (uniform vs ours).
A quality measurement: its figures do not depend on what else runs on the machine
(only `wall_time_s` does). A rerun skips what is already done.

    python benchmarks/quality.py [--pipeline examples/demo/pipeline.yaml] [--run-dir runs/quality] [--tasks none]
"""

from __future__ import annotations

import argparse
import ast
import sysconfig
import time
from pathlib import Path
from typing import Any

from quantship import layout
from quantship.bench.provenance import provenance
from quantship.models.loading import load_tokenizer
from quantship.options import RecoverOptions, Thresholds, ValidateOptions
from quantship.pipeline.config import load_pipeline
from quantship.pipeline.runner import Pipeline, stage_range
from quantship.progress import stderr_console
from quantship.quantize.spec import VariantSpec
from quantship.quantize.variants import run_quantize
from quantship.rundir import RunDir, atomic_write_json, atomic_write_text
from quantship.validate.baseline_data import BaselineData, load_baseline
from quantship.validate.gate import failed_checks
from quantship.validate.mixed_precision import allocate_variant
from quantship.validate.scorers import open_scorer
from quantship.validate.variant import measure_windows, validate_variant

ROOT = Path(__file__).resolve().parents[1]
GGUF_PEERS = {"q4ks-imatrix": "Q4_K_S", "q4km-imatrix": "Q4_K_M", "q5km-imatrix": "Q5_K_M", "q6k-imatrix": "Q6_K"}
GPTQ_PEER = "gptq-w4a16"
MATCHED_PEER = "q4km-imatrix"
SECOND_CORPUS = "docstrings of the Python standard library (CPython sources, ast.get_docstring, >= 300 characters)"


def stdlib_docstrings(out: Path, min_chars: int = 300) -> Path:
    """One document per module, class or function docstring of the installed standard library, sorted by path."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    documents = []
    for path in sorted(stdlib.rglob("*.py")):
        parts = set(path.relative_to(stdlib).parts)
        if parts & {"test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo"}:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in [tree, *ast.walk(tree)]:
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= min_chars:
                    documents.append(" ".join(doc.split()))
    atomic_write_text(out, "\n\n".join(dict.fromkeys(documents)) + "\n")
    return out


def row(result: dict[str, Any], source: str, name: str) -> dict[str, Any]:
    checks = result["checks"]
    return {
        "name": name, "variant": result["variant"], "source": source, "bits_per_weight": result["bits_per_weight"],
        "kl_mean": (checks.get("kl_mean") or {}).get("value"),
        "top1_agreement": (checks.get("top1_agreement") or {}).get("value"),
        "perplexity_delta": (checks.get("perplexity") or {}).get("value"),
        "passed": result["passed"], "failed_checks": result["failed_checks"],
    }


def window_row(run: RunDir, base_row: dict[str, Any], baseline: BaselineData, thresholds: Thresholds,
               options: ValidateOptions, console) -> dict[str, Any]:
    """The window checks of one variant on another baseline's windows (the second corpus)."""
    eval_ = baseline.summary["eval"]
    scorer = open_scorer(run.stage_dir(layout.variant(base_row["variant"])), load_tokenizer(baseline.checkpoint),
                         eval_["dtype"], eval_["device"], max(int(baseline.plan.input_ids.shape[1]), 512))
    try:
        checks, delta = measure_windows(scorer, baseline, thresholds, options, console, {})
    finally:
        scorer.close()
    values = {c.name: c.value for c in checks}
    failed = failed_checks(checks)
    return {**{k: base_row[k] for k in ("name", "variant", "source", "bits_per_weight")},
            "kl_mean": values.get("kl_mean"), "top1_agreement": values.get("top1_agreement"), "perplexity_delta": delta,
            "passed": not failed, "failed_checks": failed}


def matched(rows: list[dict[str, Any]]) -> dict[str, Any]:
    peer = next(r for r in rows if r["name"] == MATCHED_PEER)
    ours = next(r for r in rows if r["name"] == f"quantship@{MATCHED_PEER}")
    return {"peer": peer["name"], "peer_bits_per_weight": peer["bits_per_weight"], "peer_kl_mean": peer["kl_mean"],
            "ours": ours["name"], "ours_bits_per_weight": ours["bits_per_weight"], "ours_kl_mean": ours["kl_mean"],
            "kl_ratio": ours["kl_mean"] / peer["kl_mean"] if peer["kl_mean"] else None}


def smallest_passing(rows: list[dict[str, Any]], gate_runs: int | None) -> dict[str, Any]:
    def smallest(source_filter):
        passing = [r for r in rows if r["passed"] and source_filter(r)]
        return min(passing, key=lambda r: r["bits_per_weight"]) if passing else None

    uniform = smallest(lambda r: r["source"] != "quantship")
    ours = smallest(lambda r: r["source"] == "quantship")
    return {"uniform": uniform and uniform["name"], "uniform_bits_per_weight": uniform and uniform["bits_per_weight"],
            "ours": ours and ours["name"], "ours_bits_per_weight": ours and ours["bits_per_weight"], "gate_runs": gate_runs,
            "bits_saved": (uniform["bits_per_weight"] - ours["bits_per_weight"]) if uniform and ours else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, default=ROOT / "examples" / "demo" / "pipeline.yaml",
                        help="model, baseline, calibration and validate settings")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "quality")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quality.json")
    parser.add_argument("--tasks", default=None, help="comma-separated lm-eval tasks for the gate, or none (default: the pipeline's)")
    args = parser.parse_args()

    console = stderr_console()
    started = time.time()
    config = load_pipeline(args.pipeline).model_copy(update={"run_dir": args.run_dir.resolve()})
    Pipeline(config, ROOT, console).execute(stage_range(None, "calibrate"))
    run = RunDir(args.run_dir)
    baseline = load_baseline(run)
    section = config.validate_
    thresholds, options = section.thresholds, section.measuring()
    if args.tasks is not None:
        options = options.model_copy(update={"tasks": [] if args.tasks == "none" else args.tasks.split(",")})
    recover = RecoverOptions()  # the project's defaults (every type, 512 tokens), not the demo's trimmed ones

    specs = [VariantSpec(name=name, method="gguf", scheme=scheme, imatrix=True) for name, scheme in GGUF_PEERS.items()]
    specs.append(VariantSpec(name=GPTQ_PEER, method="gptq", scheme="W4A16", group_size="auto"))
    rows = []
    for spec in specs:
        [made] = run_quantize(run, [spec], console, keep_going=True)
        if not made.ok:
            rows.append({"name": spec.name, "source": "llama.cpp" if spec.method == "gguf" else "llm-compressor",
                         "error": made.error, "passed": False})
            continue
        source = "llama.cpp" if spec.method == "gguf" else "llm-compressor"
        rows.append(row(validate_variant(run, spec.name, baseline, thresholds, options, console), source, spec.name))
        console.print(f"{spec.name}: {rows[-1]}")

    allocations = {}
    for peer in GGUF_PEERS:
        peer_row = next(r for r in rows if r["name"] == peer)
        if "error" in peer_row:
            continue
        settings = recover.model_copy(update={"target": "budget", "max_bits_per_weight": peer_row["bits_per_weight"]})
        record = allocate_variant(run, peer, baseline, thresholds, options, settings, console, name=f"mix-at-{peer}")
        allocations[f"quantship@{peer}"] = record
    gate_settings = recover.model_copy(update={"target": "gate"})
    allocations["quantship-gate"] = allocate_variant(run, MATCHED_PEER, baseline, thresholds, options, gate_settings, console,
                                                     name="mix-gate")
    for name, record in allocations.items():
        if not record["runs"]:
            rows.append({"name": name, "source": "quantship", "error": record["outcome"], "passed": False})
            continue
        chosen = record["recovered"] or record["runs"][-1]["variant"]
        result = validate_variant(run, chosen, baseline, thresholds, options, console)  # kept: measured by the allocation
        rows.append(row(result, "quantship", name))

    # second corpus: its own baseline windows, every variant's window checks on them
    corpus = stdlib_docstrings(args.run_dir.resolve().parent / f"{args.run_dir.name}-corpus2.txt")
    second = config.model_copy(update={
        "run_dir": args.run_dir.resolve().parent / f"{args.run_dir.name}-corpus2",
        "baseline": config.baseline.model_copy(update={"eval_source": f"text:{corpus}"}),
    })
    Pipeline(second, ROOT, console).execute(stage_range("baseline", "baseline"))
    baseline2 = load_baseline(RunDir(second.resolved_run_dir(ROOT)))
    rows2 = [window_row(run, r, baseline2, thresholds, options, console) for r in rows if "error" not in r]

    gate_runs = allocations["quantship-gate"].get("gate_runs")
    result = {
        **provenance(),
        "model": str(baseline.checkpoint),
        "thresholds": thresholds.model_dump(),
        "gate_checks": options.model_dump(),
        "baseline_perplexity": baseline.perplexity,
        "rows": rows,
        "matched": matched(rows),
        "smallest_passing": smallest_passing(rows, gate_runs),
        "second_corpus": {"text": SECOND_CORPUS, "baseline_perplexity": baseline2.perplexity,
                          "checks": "window checks only (perplexity, KL mean, KL p99, top-1)"},
        "rows_second_corpus": rows2,
        "matched_second_corpus": matched(rows2),
        "smallest_passing_second_corpus": smallest_passing(rows2, None),
        "allocations": {name: {k: v for k, v in record.items() if k != "runs"} | {
            "runs": [{k: v for k, v in r.items() if k != "types"} for r in record["runs"]]} for name, record in allocations.items()},
        "wall_time_s": round(time.time() - started, 1),
    }
    for r in rows:
        console.print(f"{r['name']:<26} {r.get('bits_per_weight') or 0:6.3f} bpw  KL {r.get('kl_mean') or 0:.4f}  "
                      f"top-1 {r.get('top1_agreement') or 0:.3f}  ppl {100 * (r.get('perplexity_delta') or 0):+.1f}%  "
                      f"{'PASS' if r['passed'] else 'FAIL ' + ', '.join(r.get('failed_checks', [])) or r.get('error', '')}")
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
