"""Where each stage's outputs live in a run directory: every such path is named here, once.

A stage output is a folder published whole by `RunDir.stage` (manifest last); the names
below are relative to the run directory's root. Each stage's `load` (quantship.stages)
is the one reader of what is inside.
"""

from __future__ import annotations

from pathlib import Path

from quantship.rundir import RunDir, read_json

PLAN = "plan"
PLAN_JSON = f"{PLAN}/plan.json"
BASELINE = "baseline"
BASELINE_JSON = "baseline.json"  # inside BASELINE: model facts, perplexity, probes, eval settings
EVAL_TENSORS = "eval.safetensors"  # the evaluation windows and the baseline's top-k per position
REFERENCES_JSON = "references.json"  # greedy reference generations and probe answers
REFERENCES_TENSORS = "references.safetensors"  # the baseline's top-k along each greedy path
CALIBRATION = "calibration"
VARIANTS = "variants"
ALLOCATION_SUFFIX = ".allocation.json"  # validation/<variant>.allocation.json: one per-tensor allocation's record
VALIDATION = "validation"  # a plain folder of verdicts (<variant>.json) and SELECTED
SELECTED = "selected.json"
BENCH = "bench"
SERVE = "serve"  # server records and logs (not a published stage: servers come and go)
ROLLOUT = "rollout"


def variant(name: str) -> str:
    return f"{VARIANTS}/{name}"


def bench(tag: str) -> str:
    return f"{BENCH}/{tag}"


def baseline_checkpoint(run: RunDir) -> Path:
    """The checkpoint the run's baseline was measured on (later stages default to it)."""
    folder = run.require(BASELINE, "quantship baseline --model PATH")
    return Path(read_json(folder / BASELINE_JSON)["checkpoint"]["path"])
