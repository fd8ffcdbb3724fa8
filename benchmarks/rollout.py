"""Canary rollouts for real: does the gateway roll back a worse quantization and promote a faithful one?

Control: the bf16 demo checkpoint on vLLM CPU. Treatment: llama-server serving a GGUF that
passes the gate (Q8_0) and one that fails it (Q2_K). Each run is a fresh experiment on the
scaled rollout config of tests/support/live_rollout.py (every threshold at its default,
live KL included); users replay the built-in prompts until the gateway decides. Writes
benchmarks/results/rollout.json.

    python benchmarks/rollout.py            # 5 runs per variant
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quantship.bench.provenance import provenance  # noqa: E402
from quantship.rollout.config import Thresholds  # noqa: E402
from quantship.rundir import atomic_write_json  # noqa: E402
from tests.support import live_rollout  # noqa: E402


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def _kl(run: dict) -> float | None:
    """The estimate the decision saw (at the rollback), else the last check's."""
    for key in ("live_kl", "live_kl_last"):
        if run.get(key) and run[key].get("value") is not None:
            return run[key]["value"]
    return None


def _write(out: Path, runs: dict[str, list[dict]], started: float) -> None:
    good, bad = runs["good"], runs["bad"]
    fired = Counter(r.split(" ")[0] + (" KL" if r.startswith("live KL") else "") for run in bad for r in run["reasons"])
    kl_good, kl_bad = _median([_kl(r) for r in good]), _median([_kl(r) for r in bad])
    good_kls, bad_kls = [k for k in map(_kl, good) if k is not None], [k for k in map(_kl, bad) if k is not None]
    atomic_write_json(out, {
        "provenance": provenance(benchmark="rollout", wall_s=round(time.time() - started, 1)),
        "setup": {
            "control": "bf16 demo checkpoint (SmolLM2-135M-Instruct) on vLLM CPU 0.32.0",
            "treatment": {"good": f"{live_rollout.GOOD} GGUF on llama-server", "bad": f"{live_rollout.BAD} GGUF on llama-server"},
            "config": "tests/support/live_rollout.py: stages canary 50% -> full 100%, min_samples 24, min_stage_seconds 30, "
                      "check_interval_s 2, breach_checks 2, live_kl sample_rate 0.5 min_samples 8, "
                      "other thresholds default (max_live_kl included)",
            "traffic": "users user-N, prompt N mod 22 of quantship.evaluate.prompts (chat and completions), greedy, 48 tokens, "
                       "4 concurrent",
        },
        "good": {
            "runs": len(good),
            "rolled_back": sum(r["rolled_back"] for r in good),
            "reached_stage": Counter(r["reached_stage"] for r in good).most_common(1)[0][0],
            "reached_stage_per_run": [r["reached_stage"] for r in good],
        },
        "bad": {
            "runs": len(bad),
            "rolled_back": sum(r["rolled_back"] for r in bad),
            "median_checks_to_rollback": _median([r["checks_with_data"] for r in bad if r["rolled_back"]]),
            "median_seconds": _median([r["seconds_to_rollback"] for r in bad]),
            "reasons": sorted({reason for r in bad for reason in r["reasons"]}),
            "signals_fired": dict(fired),
        },
        "signals": {
            "kl_treatment_vs_control": {"good": kl_good, "bad": kl_bad,
                                        "per_run": {"good": [_kl(r) for r in good], "bad": [_kl(r) for r in bad]}},
            "methods": sorted({(r.get("live_kl") or {}).get("method") or "none" for r in good + bad}),
            "threshold": Thresholds().max_live_kl,
            # The good estimate sits at zero, either side: separation is the smallest bad estimate
            # over the largest good one in magnitude (every run, not medians).
            "separation": (round(min(bad_kls) / max(abs(k) for k in good_kls), 1)
                           if good_kls and bad_kls and max(abs(k) for k in good_kls) > 0 else None),
        },
        "runs": runs,
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per variant")
    parser.add_argument("--max-requests", type=int, default=400, help="per run, before giving up on a decision")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/rollout.json")
    parser.add_argument("--only", choices=("good", "bad"), help="run one kind; keep the other's runs from --out")
    args = parser.parse_args()
    reason = live_rollout.requirements()
    if reason:
        sys.exit(reason)
    started = time.time()
    runs: dict[str, list[dict]] = {"good": [], "bad": []}
    if args.only and args.out.exists():
        kept = "bad" if args.only == "good" else "good"
        runs[kept] = json.loads(args.out.read_text())["runs"][kept]
    with tempfile.TemporaryDirectory(prefix="quantship-rollout-bench-") as tmp:
        tmp_path = Path(tmp)
        with live_rollout.control_server(tmp_path / "control") as control:
            for kind, scheme in (("good", live_rollout.GOOD), ("bad", live_rollout.BAD)):
                if args.only and kind != args.only:
                    continue
                gguf = live_rollout.quantize_demo(scheme, tmp_path)
                with live_rollout.treatment_server(gguf, tmp_path / f"serve-{kind}") as treatment:
                    for i in range(args.runs):
                        cfg = live_rollout.config(tmp_path / f"{kind}-{i}.db", f"bench-{kind}-{i}", control, treatment)
                        result = live_rollout.run(cfg, max_requests=args.max_requests)
                        print(f"{kind} {i}: rolled_back={result['rolled_back']} stage={result['reached_stage']} "
                              f"kl={_kl(result)} reasons={result['reasons']}", file=sys.stderr, flush=True)
                        runs[kind].append(result)
                        _write(args.out, runs, started)  # after every run: a cut-short benchmark keeps what it measured
    print(args.out)


if __name__ == "__main__":
    main()
