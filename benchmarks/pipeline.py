"""The demo pipeline's wall time: a cold run, stage by stage, against the 10-minute goal.

Runs `quantship run examples/demo/pipeline.yaml` into a fresh run directory (installs,
the demo model build and the llama.cpp build are not counted: they are cached before the
clock starts), then runs it again unchanged: the second run is the resume path, which
should cost seconds. Per-stage times come from the run's own pipeline.json. Prints a
table and writes benchmarks/results/pipeline.json.

    python benchmarks/pipeline.py [--pipeline examples/demo/pipeline.yaml] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from quantship.bench.provenance import provenance
from quantship.models.demo import materialise_demo_model
from quantship.rundir import atomic_write_json, read_json

GOAL_S = 600.0
ROOT = Path(__file__).resolve().parents[1]


def timed_run(pipeline: Path) -> tuple[float, int, dict]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "quantship", "run", str(pipeline)], cwd=ROOT, check=False)
    seconds = time.perf_counter() - started
    config = yaml.safe_load(pipeline.read_text())
    state = read_json(Path(config["run_dir"]) / "pipeline.json")
    return seconds, done.returncode, {name: round(s["seconds"], 1) for name, s in state["stages"].items()} | {
        f"{name}_status": s["status"] for name, s in state["stages"].items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, default=ROOT / "examples" / "demo" / "pipeline.yaml")
    parser.add_argument("--keep", action="store_true", help="Keep the run directory (printed at the end).")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "pipeline.json")
    args = parser.parse_args()

    materialise_demo_model()  # a one-off build, outside the clock like the installs
    scratch = Path(tempfile.mkdtemp(prefix="quantship-pipeline-bench-"))
    config = yaml.safe_load(args.pipeline.read_text())
    config["run_dir"] = str(scratch / "run")
    pipeline = scratch / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump(config, sort_keys=False))
    load_before = os.getloadavg()[0]
    cold_s, cold_rc, cold_stages = timed_run(pipeline)
    resume_s, resume_rc, resume_stages = timed_run(pipeline)
    result = {
        "pipeline": str(args.pipeline.relative_to(ROOT) if args.pipeline.is_relative_to(ROOT) else args.pipeline),
        **provenance(load_average_1m_before=round(load_before, 2)),
        "goal_s": GOAL_S,
        "cold": {"seconds": round(cold_s, 1), "exit_code": cold_rc, "stages": cold_stages, "within_goal": cold_s <= GOAL_S},
        "resume": {"seconds": round(resume_s, 1), "exit_code": resume_rc, "stages": resume_stages},
        "resume_speedup": round(cold_s / resume_s, 1) if resume_s > 0 else None,
    }
    atomic_write_json(args.out, result)
    print(f"{'stage':<10} {'cold s':>8} {'resume s':>9}")
    for stage in ("plan", "baseline", "calibrate", "quantize", "validate", "serve", "bench"):
        print(
            f"{stage:<10} {cold_stages.get(stage, 0):>8.1f} {resume_stages.get(stage, 0):>9.1f}  {cold_stages.get(stage + '_status', '')}"
        )
    print(
        f"{'total':<10} {cold_s:>8.1f} {resume_s:>9.1f}  (goal {GOAL_S:.0f} s: {'met' if cold_s <= GOAL_S else 'missed'}); "
        f"exit {cold_rc}/{resume_rc}"
    )
    print(f"wrote {args.out}")
    if args.keep:
        print(f"run directory: {scratch / 'run'}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
