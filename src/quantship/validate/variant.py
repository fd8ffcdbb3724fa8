"""Validate one variant: open it in its runtime, run every check, write validation/<variant>.json."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from rich.console import Console

from quantship import layout
from quantship.errors import InputError
from quantship.models.loading import load_tokenizer
from quantship.options import Thresholds, ValidateOptions
from quantship.progress import progress_bar
from quantship.rundir import RunDir, atomic_write_json, read_json, sha256_json, tool_versions
from quantship.validate.baseline_data import BaselineData
from quantship.validate.gate import CheckResult, errored, failed_checks
from quantship.validate.greedy import greedy_check
from quantship.validate.long_context import baseline_long_perplexity, long_context_check, long_perplexity, long_plan
from quantship.validate.probes import probe_check
from quantship.validate.scorers import open_scorer
from quantship.validate.tasks import baseline_task_accuracy, lm_for, prepare_tasks, task_accuracy
from quantship.validate.verdicts import VALIDATION_DIR, verdict_path
from quantship.validate.windows import WindowComparison, compare_windows

KL_BINS = [0.0, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, math.inf]


def variant_manifest(run_dir: RunDir, variant: str) -> dict[str, Any]:
    manifest = run_dir.manifest(layout.variant(variant))
    if manifest is None:
        raise InputError(
            f"no complete variant {variant!r} in {run_dir.root / 'variants'}",
            "run `quantship quantize` for it, or check the name",
        )
    return manifest


def validate_variant(
    run_dir: RunDir, variant: str, baseline: BaselineData, thresholds: Thresholds, options: ValidateOptions,
    console: Console, force: bool = False
) -> dict[str, Any]:
    """Measure `variant`; the verdict file is written even when checks fail or error."""
    manifest = variant_manifest(run_dir, variant)
    key = sha256_json(
        {"variant": manifest.get("fingerprint"), "baseline": baseline.fingerprint, "thresholds": thresholds, "options": options.__dict__}
    )
    out = verdict_path(run_dir, variant)
    if not force and out.exists():
        previous = read_json(out)
        # A verdict with a check that could not be measured is measured again: the error may be fixed.
        if previous.get("key") == key and not any(c.get("error") for c in previous.get("checks", {}).values()):
            console.print(f"{variant}: variant, baseline and thresholds unchanged, kept {out} (--force to redo)")
            return previous
    started = time.time()
    tokenizer = load_tokenizer(baseline.checkpoint)
    eval_ = baseline.summary["eval"]
    checks: list[CheckResult] = []
    extras: dict[str, Any] = {}
    plan = None
    try:
        plan = long_plan(baseline, tokenizer, options.long_window, options.long_windows)
    except InputError as error:
        checks.append(errored("long_context", thresholds.max_long_context_delta, "<=", error.one_line()))
    n_ctx = max(int(baseline.plan.input_ids.shape[1]), int(plan.input_ids.shape[1]) if plan is not None else 0, 512)
    folder = run_dir.stage_dir(layout.variant(variant))
    runtime = None
    try:
        with console.status(f"loading {variant} ({manifest.get('format')})"):
            scorer = open_scorer(folder, tokenizer, eval_["dtype"], eval_["device"], n_ctx)
        runtime = scorer.runtime
    except Exception as error:  # an unloadable variant fails every check, with the reason
        for name, limit, cmp in _all_checks(thresholds, options.tasks):
            if name not in {c.name for c in checks}:
                checks.append(errored(name, limit, cmp, error))
        scorer = None
    if scorer is not None:
        try:
            short_delta = _window_checks(scorer, baseline, thresholds, options, console, checks, extras)
            _guard(
                checks, "greedy", thresholds.max_greedy_regressions,
                lambda: _with_bar(
                    console, f"{variant}: greedy references", len(baseline.references),
                    lambda adv: greedy_check(scorer, baseline, tokenizer, thresholds, adv),
                ),
            )
            _guard(
                checks, "probes", thresholds.max_probe_drop,
                lambda: _with_bar(
                    console, f"{variant}: probes", len(baseline.probes),
                    lambda adv: probe_check(scorer, baseline, tokenizer, thresholds, adv),
                ),
            )
            if options.tasks:
                checks.extend(_task_checks(scorer, baseline, tokenizer, thresholds, options, run_dir, console))
            if plan is not None:
                _guard(
                    checks, "long_context", thresholds.max_long_context_delta,
                    lambda: _long(scorer, baseline, plan, short_delta, thresholds, run_dir, console, variant),
                )
        finally:
            scorer.close()
    order = [name for name, _, _ in _all_checks(thresholds, options.tasks)]
    checks.sort(key=lambda c: order.index(c.name))
    failed = failed_checks(checks)
    result = {
        "variant": variant,
        "passed": not failed and len(checks) == len(order),
        "failed_checks": failed,
        "key": key,
        "runtime": runtime,
        "format": manifest.get("format"),
        "method": manifest.get("method"),
        "scheme": manifest.get("scheme"),
        "bits_per_weight": manifest.get("bits_per_weight"),
        "size_bytes": manifest.get("size_bytes"),
        "overrides": manifest.get("overrides", []),
        "variant_fingerprint": manifest.get("fingerprint"),
        "baseline_fingerprint": baseline.fingerprint,
        "thresholds": thresholds.model_dump(),
        "checks": {c.name: c.to_json() for c in checks},
        **extras,
        "validated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_time_s": round(time.time() - started, 3),
        "tool_versions": tool_versions(),
    }
    atomic_write_json(out, result)
    return result


def _all_checks(t: Thresholds, tasks: list[str] = ()) -> list[tuple[str, float, str]]:
    return [
        ("perplexity", t.max_perplexity_delta, "<="),
        ("kl_mean", t.max_kl_mean, "<="),
        ("kl_p99", t.max_kl_p99, "<="),
        ("top1_agreement", t.min_top1_agreement, ">="),
        ("greedy", t.max_greedy_regressions, "<="),
        ("probes", t.max_probe_drop, "<="),
        ("long_context", t.max_long_context_delta, "<="),
        *((f"task:{name}", t.max_task_relative_loss, "<=") for name in tasks),
    ]


def _guard(checks: list[CheckResult], name: str, limit: float, fn) -> None:
    try:
        checks.append(fn())
    except KeyboardInterrupt:
        raise
    except Exception as error:  # a check that crashed is recorded as failed, with its reason
        checks.append(errored(name, limit, "<=", error))


def _with_bar(console: Console, label: str, total: int, fn):
    with progress_bar(label, total, "items", console) as advance:
        return fn(advance)


def _window_checks(scorer, baseline, thresholds, options, console, checks, extras) -> float | None:
    """Perplexity, KL mean/p99 and top-1 from one pass; any failure marks all four as errored."""
    try:
        measured, delta = measure_windows(scorer, baseline, thresholds, options, console, extras)
    except KeyboardInterrupt:
        raise
    except Exception as error:
        checks.extend(errored(name, limit, op, error) for name, limit, op in _all_checks(thresholds)[:4])
        return None
    checks.extend(measured)
    return delta


def measure_windows(scorer, baseline, thresholds, options, console, extras) -> tuple[list[CheckResult], float]:
    """Perplexity, KL mean/p99 and top-1 on the baseline's windows; also --recover's cheap screen."""
    with progress_bar("perplexity + KL", baseline.plan.input_ids.numel(), "tok", console) as advance:
        cmp = compare_windows(scorer.logits, baseline.plan, baseline.topk_ids, baseline.topk_logprobs, options.batch_size, advance)
    return window_checks(cmp, baseline, thresholds, extras)


def window_checks(cmp: WindowComparison, baseline, thresholds, extras, tail: str | None = None) -> tuple[list[CheckResult], float]:
    """The four window checks from one comparison, whichever runtime (in-process or a server) produced it."""
    delta = cmp.perplexity / baseline.perplexity - 1
    kl = cmp.kl
    finite = bool(torch.isfinite(kl).all())
    mean = float(kl.mean()) if finite else math.inf
    p99 = float(torch.quantile(kl.float(), 0.99)) if finite else math.inf
    tail = tail or "KL over the baseline's top-k plus one tail bucket (a lower bound of the full KL)"
    counts = torch.histogram(kl.float().clamp(max=1e6), torch.tensor([b if math.isfinite(b) else 1e7 for b in KL_BINS])).hist
    extras["kl_histogram"] = {"edges": [b if math.isfinite(b) else None for b in KL_BINS], "counts": [int(c) for c in counts]}
    measured = [
        CheckResult(
            "perplexity", delta, thresholds.max_perplexity_delta, "<=", unit="relative change",
            detail={"baseline": baseline.perplexity, "variant": cmp.perplexity if math.isfinite(cmp.perplexity) else None,
                    "tokens": cmp.tokens},
        ),
        CheckResult("kl_mean", mean, thresholds.max_kl_mean, "<=", unit="nats", detail={"method": tail, "median": float(kl.median())}),
        CheckResult("kl_p99", p99, thresholds.max_kl_p99, "<=", unit="nats", detail={"method": tail, "max": float(kl.max())}),
        CheckResult("top1_agreement", float(cmp.top1_agree.float().mean()), thresholds.min_top1_agreement, ">=", unit="share of positions"),
    ]
    return measured, delta


def _task_checks(scorer, baseline, tokenizer, thresholds, options, run_dir: RunDir, console) -> list[CheckResult]:
    """One check per lm-eval task: relative accuracy loss vs the baseline on the same task files."""
    limit = thresholds.max_task_relative_loss
    try:
        cache = run_dir.root / VALIDATION_DIR
        task_dir, sha = prepare_tasks(cache, options.task_items)
        with console.status("lm-eval: baseline task accuracy"):
            base = baseline_task_accuracy(baseline, tokenizer, options.tasks, task_dir, sha, cache)
        with console.status("lm-eval: variant task accuracy"):
            var = task_accuracy(lm_for(scorer, tokenizer), options.tasks, task_dir)
    except KeyboardInterrupt:
        raise
    except Exception as error:
        return [errored(f"task:{t}", limit, "<=", error) for t in options.tasks]
    return [
        CheckResult(
            f"task:{t}", max(0.0, 1 - var[t] / base[t]) if base[t] > 0 else None, limit, "<=", unit="relative accuracy loss",
            detail={"baseline_acc": base[t], "variant_acc": var[t], "task_files_sha256": sha},
            error=None if base[t] > 0 else "the baseline scores 0 on this task: nothing to compare",
        )
        for t in options.tasks
    ]


def _long(scorer, baseline, plan, short_delta, thresholds, run_dir: RunDir, console, variant) -> CheckResult:
    total = plan.input_ids.numel()
    with progress_bar("baseline long-context slice", total, "tok", console) as advance:
        base = baseline_long_perplexity(baseline, plan, run_dir.root / VALIDATION_DIR, advance)
    with progress_bar(f"{variant}: long-context slice", total, "tok", console) as advance:
        var = long_perplexity(scorer.logits, plan, advance)
    return long_context_check(var, base, short_delta, plan, thresholds)
