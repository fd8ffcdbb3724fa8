"""The served-engine gate: a verdict holds the in-process and the served figures, and fails on either.

The served engine must pass the same window thresholds as in-process, and must agree with
the in-process figures within the `max_served_*_diff` tolerances: a server that is within
the thresholds but far from what was gated is serving something else (a kernel, config or
weights fault), which is exactly what this check exists to catch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

from quantship import layout
from quantship.models.loading import load_tokenizer
from quantship.options import Thresholds
from quantship.progress import progress_bar
from quantship.rundir import RunDir, atomic_write_json, read_json
from quantship.validate.baseline_data import BaselineData, load_baseline
from quantship.validate.gate import SERVED_TOPK, CheckResult, errored
from quantship.validate.served import Endpoint, require_prompt_logprobs, require_same_tokenizer, score_endpoint
from quantship.validate.variant import window_checks
from quantship.validate.verdicts import VALIDATION_DIR, verdict_path

PREFIX = "served:"
CONTROL = "control"  # `validate --url U --variant control`: the baseline checkpoint itself, served
_DIFFS = (  # (check compared with its in-process figure, tolerance field)
    ("kl_mean", "max_served_kl_mean_diff"),
    ("perplexity", "max_served_perplexity_diff"),
    ("top1_agreement", "max_served_top1_diff"),
)
# What the baseline scored against itself measures, by construction: the control's in-process figures.
CONTROL_IN_PROCESS = {"perplexity": 0.0, "kl_mean": 0.0, "kl_p99": 0.0, "top1_agreement": 1.0}


def control_path(run_dir: RunDir) -> Path:
    """Outside validation/*.json, which the report and selection read as variant verdicts."""
    return run_dir.root / VALIDATION_DIR / "served" / f"{CONTROL}.json"


def measure_served(
    endpoint: Endpoint, baseline: BaselineData, thresholds: Thresholds, console: Console
) -> tuple[list[CheckResult], dict[str, Any]]:
    """Refuse an endpoint that cannot be compared; otherwise the four window checks as the server scores them."""
    require_prompt_logprobs(endpoint)
    require_same_tokenizer(endpoint, load_tokenizer(baseline.checkpoint))
    with progress_bar(f"served {endpoint.model}: perplexity + KL", baseline.plan.input_ids.numel(), "tok", console) as advance:
        score = score_endpoint(endpoint, baseline, advance)
    method = (
        f"KL over the baseline's top-k plus one tail bucket from the server's top-{SERVED_TOPK} prompt log-probabilities; "
        f"a baseline token the server did not rank is merged into the tail on both sides (a lower bound); "
        f"all baseline top-k tokens ranked at {score.covered:.1%} of positions"
    )
    extras: dict[str, Any] = {}
    checks, _ = window_checks(score.comparison, baseline, thresholds, extras, tail=method)
    info = {"url": score.url, "model": score.model, "served_topk": SERVED_TOPK, "topk_covered": score.covered, **extras}
    return checks, info


def diff_checks(served: list[CheckResult], in_process: dict[str, float | None], thresholds: Thresholds) -> list[CheckResult]:
    """|served - in-process| per figure, each against its stated tolerance."""
    by_name = {c.name: c for c in served}
    out = []
    for name, field in _DIFFS:
        limit = getattr(thresholds, field)
        ours, theirs = in_process.get(name), by_name[name].value
        check = f"{PREFIX}{name}_diff"
        if ours is None or theirs is None:
            out.append(errored(check, limit, "<=", "the in-process or the served figure is missing"))
        else:
            out.append(CheckResult(check, abs(theirs - ours), limit, "<=", detail={"in_process": ours, "served": theirs}))
    return out


def served_verdict(
    run_dir: RunDir, verdict: dict[str, Any], endpoint: Endpoint, baseline: BaselineData, thresholds: Thresholds, console: Console
) -> dict[str, Any]:
    """Add the served figures to an in-process verdict (validation/<variant>.json) and rewrite it."""
    started = time.time()
    checks = {k: v for k, v in verdict["checks"].items() if not k.startswith(PREFIX)}
    in_process_passed = verdict.get("in_process_passed", verdict["passed"])
    in_process = {name: checks.get(name, {}).get("value") for name in CONTROL_IN_PROCESS}
    served, info = measure_served(endpoint, baseline, thresholds, console)
    served += diff_checks(served, in_process, thresholds)
    for c in served:
        if not c.name.startswith(PREFIX):
            c.name = PREFIX + c.name
    checks.update({c.name: c.to_json() for c in served})
    served_failed = [c.name for c in served if not c.passed]
    result = {
        **verdict,
        "passed": bool(in_process_passed) and not served_failed,
        "in_process_passed": bool(in_process_passed),
        "failed_checks": [n for n in verdict.get("failed_checks", []) if not n.startswith(PREFIX)] + served_failed,
        "checks": checks,
        "served": {
            **info,
            "passed": not served_failed,
            "validated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "wall_time_s": round(time.time() - started, 3),
        },
    }
    if verdict.get("variant") == CONTROL:
        atomic_write_json(control_path(run_dir), result)
    else:
        atomic_write_json(verdict_path(run_dir, verdict["variant"]), result)
    return result


def control_verdict(baseline: BaselineData, thresholds: Thresholds) -> dict[str, Any]:
    """The in-process side of the control: the baseline against itself, exact by construction."""
    return {
        "variant": CONTROL,
        "passed": True,
        "failed_checks": [],
        "checkpoint": str(baseline.checkpoint),
        "baseline_fingerprint": baseline.fingerprint,
        "thresholds": thresholds.model_dump(),
        "checks": {
            name: {"value": value, "passed": True, "detail": {"method": "the baseline scored against itself"}}
            for name, value in CONTROL_IN_PROCESS.items()
        },
    }


def gate_running_server(run_dir: RunDir, variant: str, url: str, model: str, console: Console) -> dict[str, Any] | None:
    """`quantship serve` / `run`, once a vLLM server is ready: the served checks against the variant's verdict.

    None when there is no verdict to compare with (a forced serve); the thresholds are the
    ones the verdict was gated with.
    """
    path = verdict_path(run_dir, variant)
    if not path.exists() or run_dir.manifest(layout.BASELINE) is None:
        return None
    verdict = read_json(path)
    thresholds = Thresholds(**verdict.get("thresholds", {}))
    endpoint = Endpoint(url, model)
    try:
        return served_verdict(run_dir, verdict, endpoint, load_baseline(run_dir), thresholds, console)
    finally:
        endpoint.close()
