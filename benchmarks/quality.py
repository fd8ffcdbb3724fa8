"""Quality at ~4 bits, three ways, measured in one run by the same gate code.

1. llm-compressor GPTQ W4A16 with the largest group size that divides every layer, no
   overrides: what a user runs by hand (quantship's llm-compressor backend, spec only).
2. llama.cpp Q4_K_M with an importance matrix from the run's calibration text.
3. quantship's best auto-selected variant: `--recover` on whichever of (1) and (2)
   fails the gate (llm-compressor and GGUF both recover), with a bits-per-weight budget
   equal to the larger of (1) and (2), then `smallest-passing` over everything; when
   nothing passes within that budget, the closest variant (lowest KL mean), marked failing.

Every variant is validated by `quantship.validate` against the same baseline windows
(perplexity delta, top-k+tail KL, top-1, greedy, probes, long context); the JSON holds
those numbers and each variant's measured bits/weight. A variant that cannot be made
here (e.g. the GGUF converter refusing the checkpoint's tokenizer) is recorded with the
error, not dropped. Baseline and calibration come from the pipeline file's settings
(the demo's by default), run into the benchmark's own run directory (runs/quality) so
the demo run's selection is not touched; a rerun skips what is already done.

    python benchmarks/quality.py [--pipeline examples/demo/pipeline.yaml] [--run-dir runs/quality]
                                 [--long-windows 1] [--tasks none] [--blocks-per-step 4]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from quantship.bench.provenance import provenance
from quantship.options import Thresholds
from quantship.pipeline.config import load_pipeline
from quantship.pipeline.runner import Pipeline, stage_range
from quantship.progress import stderr_console
from quantship.quantize.spec import VariantSpec
from quantship.quantize.variants import run_quantize
from quantship.rundir import RunDir, atomic_write_json, read_json
from quantship.validate.baseline_data import load_baseline
from quantship.validate.recover import RecoverOptions, recover_variant
from quantship.validate.select import select_variant
from quantship.validate.variant import ValidateOptions, validate_variant
from quantship.validate.verdicts import verdict_path

ROOT = Path(__file__).resolve().parents[1]
CAVEAT = (
    "Demo model: its weights lie on a Q4_1 (block 32, asymmetric) grid, so a Q4_1 or g32 asymmetric 4-bit "
    "variant reproduces them almost exactly and says nothing about a method's quality."
)


def summary(result: dict) -> dict:
    checks = result["checks"]
    return {
        "variant": result["variant"],
        "passed": result["passed"],
        "failed_checks": result["failed_checks"],
        "bits_per_weight": result["bits_per_weight"],
        "perplexity_delta": checks.get("perplexity", {}).get("value"),
        "kl_mean": checks.get("kl_mean", {}).get("value"),
        "kl_p99": checks.get("kl_p99", {}).get("value"),
        "top1_agreement": checks.get("top1_agreement", {}).get("value"),
    }


def auto_row(results: list[dict], chosen: dict) -> dict:
    """The selected variant; when none passes within the budget, the closest one (lowest KL mean), marked as failing."""
    if chosen["selected"]:
        return summary(next(r for r in results if r["variant"] == chosen["selected"]))
    measured = [r for r in results if (r["checks"].get("kl_mean") or {}).get("value") is not None]
    if not measured:
        return {"error": chosen["reason"]}
    closest = min(measured, key=lambda r: r["checks"]["kl_mean"]["value"])
    return {**summary(closest), "note": f"nothing passes within the budget ({chosen['reason']}); closest by KL mean"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, default=ROOT / "examples" / "demo" / "pipeline.yaml",
                        help="model, baseline and calibration settings")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "quality")
    parser.add_argument("--long-windows", type=int, default=1)
    parser.add_argument("--tasks", default="none", help="comma-separated lm-eval tasks, or none")
    parser.add_argument("--blocks-per-step", type=int, default=4, help="--recover: blocks moved to 8-bit per step")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quality.json")
    args = parser.parse_args()

    console = stderr_console()
    config = load_pipeline(args.pipeline).model_copy(update={"run_dir": args.run_dir.resolve()})
    Pipeline(config, ROOT, console).execute(stage_range(None, "calibrate"))
    run = RunDir(args.run_dir)
    baseline = load_baseline(run)
    thresholds = Thresholds()
    tasks = [] if args.tasks == "none" else args.tasks.split(",")
    options = ValidateOptions(long_windows=args.long_windows, tasks=tasks)
    started = time.time()
    specs = {
        "gptq-w4a16": VariantSpec(name="bench-gptq-w4a16", method="gptq", scheme="W4A16", group_size="auto"),
        "q4_k_m-imatrix": VariantSpec(name="bench-q4km-imatrix", method="gguf", scheme="Q4_K_M", imatrix=True),
    }
    rows: dict[str, dict] = {}
    for label, spec in specs.items():
        [made] = run_quantize(run, [spec], console, keep_going=True)
        if not made.ok:
            rows[label] = {"variant": spec.name, "error": made.error}
            continue
        rows[label] = summary(validate_variant(run, spec.name, baseline, thresholds, options, console))
        print(f"{label}: {rows[label]}", flush=True)

    budget = max((r["bits_per_weight"] for r in rows.values() if r.get("bits_per_weight")), default=None)
    recoveries: dict[str, dict] = {}
    for label, row in rows.items():
        if budget is not None and "error" not in row and not row["passed"]:
            settings = RecoverOptions(max_bits_per_weight=budget, blocks_per_step=args.blocks_per_step)
            recoveries[label] = recover_variant(run, row["variant"], baseline, thresholds, options, settings, console)
            print(f"recover {label}: {recoveries[label]['outcome']}", flush=True)
    candidates = [r["variant"] for r in rows.values() if "error" not in r]
    candidates += [r["recovered"] for r in recoveries.values() if r["recovered"]]
    results = [read_json(verdict_path(run, v)) for v in candidates]
    chosen = select_variant(run, results, "smallest-passing")
    rows["quantship-auto"] = auto_row(results, chosen)
    for label, row in rows.items():
        print(f"{label:<16} {row}")
    atomic_write_json(
        args.out,
        {
            "run_dir": str(run.root),
            **provenance(),
            "baseline_perplexity": baseline.perplexity,
            "thresholds": thresholds.model_dump(),
            "variants": rows,
            "budget_bits_per_weight": budget,
            "recoveries": recoveries,
            "selection": chosen,
            "wall_time_s": round(time.time() - started, 1),
            "caveat": CAVEAT,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
