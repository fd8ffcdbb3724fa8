"""Per-tensor mixed precision for a failing variant: candidates, sensitivity, knapsack, built and gated for real.

Two modes (`RecoverOptions`):
- target `gate`: the smallest assignment that passes this run's gate, found by
  quantship.allocate.search's target correction in at most `max_gate_runs` gate runs;
- target `budget`: the least predicted KL within `max_bits_per_weight`, built and gated once.

Each build is an ordinary variant of the quantize stage (one `LayerOverride.type` per
tensor) validated by the same gate as every other variant. A target no assignment
within the size cap can meet builds the closest one (the least predicted KL that
fits) and records the gap; it fails the gate like any variant, so the run exits 1.
Every step lands in validation/<variant>.allocation.json.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import ValidationError
from rich.console import Console

from quantship import layout
from quantship.allocate.candidates import CandidateSet, overrides_for
from quantship.allocate.knapsack import Assignment, Choice, Frontier
from quantship.allocate.search import gate_ratio, search_target
from quantship.allocate.sensitivity import measure_sensitivity, sensitivity_key
from quantship.data.calibration import load_calibration
from quantship.errors import InputError
from quantship.formats.identify import identify
from quantship.options import RecoverOptions, Thresholds
from quantship.progress import progress_bar
from quantship.quantize.spec import VariantSpec
from quantship.quantize.variants import run_quantize
from quantship.rundir import RunDir, atomic_write_json
from quantship.validate.baseline_data import BaselineData
from quantship.validate.variant import ValidateOptions, validate_variant, variant_manifest


def allocation_path(run_dir: RunDir, variant: str):
    return run_dir.root / layout.VALIDATION / f"{variant}{layout.ALLOCATION_SUFFIX}"


def source_spec(variant: str, manifest: dict[str, Any]) -> VariantSpec:
    """The variant's spec as the user gave it: options left at their defaults stay unset (GGUF refuses set llm-compressor options)."""
    try:
        fields = VariantSpec.model_fields
        return VariantSpec(
            **{k: v for k, v in manifest["params"].items() if k not in fields or v != fields[k].get_default(call_default_factory=True)}
        )
    except (KeyError, TypeError, ValidationError):
        raise InputError(
            f"variant {variant!r} was not produced by `quantship quantize`",
            "allocate from variants of the quantize stage",
        ) from None


def candidate_set(run_dir: RunDir, variant: str, spec: VariantSpec, checkpoint, types, console: Console) -> CandidateSet:
    artifact = identify(run_dir.stage_dir(layout.variant(variant)))
    if artifact.container == "gguf" and spec.method == "gguf":
        from quantship.allocate.gguf_candidates import gguf_candidates

        return gguf_candidates(run_dir, checkpoint, spec.imatrix, types, console)
    if artifact.quant_method == "compressed-tensors" and spec.method in ("gptq", "rtn", "awq"):
        from quantship.allocate.llmc_candidates import llmc_candidates

        return llmc_candidates(checkpoint, types)
    raise InputError(
        f"per-tensor allocation needs a GGUF or llm-compressor (gptq, rtn, awq) variant; {variant!r} is {artifact.label}",
        "allocate from a `method: gguf` or `method: gptq` variant",
    )


def calibration_tokens(run_dir: RunDir, tokens: int):
    """The first `tokens` calibration tokens as whole windows (one window cut short when fewer)."""
    windows = load_calibration(run_dir).input_ids
    length = windows.shape[1]
    if tokens <= length:
        return windows[:1, :tokens]
    return windows[: max(1, min(windows.shape[0], tokens // length))]


def knapsack_items(candidates: CandidateSet, sensitivity: dict[str, Any], max_bits: float | None = None) -> Frontier:
    """One knapsack item per tensor or fused group: a type every member can take, sizes and predicted KLs summed."""
    items = {}
    for item, members in candidates.items().items():
        shared = set.intersection(*(set(candidates.tensors[m].bits) for m in members))
        items[item] = [
            Choice(t, sum(candidates.tensors[m].bits[t] for m in members),
                   sum(sensitivity["tensors"][m]["predicted_kl"][t] for m in members))
            for t in sorted(shared)
        ]
    return Frontier(items, max_bits=max_bits)


def allocate_variant(
    run_dir: RunDir, variant: str, baseline: BaselineData, thresholds: Thresholds, options: ValidateOptions,
    settings: RecoverOptions, console: Console, name: str | None = None,
) -> dict[str, Any]:
    """Allocate from failing `variant`'s method; builds are `<name>-mix<n>` (name: the variant's by default)."""
    started = time.time()
    manifest = variant_manifest(run_dir, variant)
    spec = source_spec(variant, manifest)
    checkpoint = baseline.checkpoint
    with console.status(f"{variant}: candidate types for every tensor"):
        candidates = candidate_set(run_dir, variant, spec, checkpoint, settings.types, console)
    ids = calibration_tokens(run_dir, settings.sensitivity_tokens)
    key = sensitivity_key(candidates, baseline.fingerprint, load_calibration(run_dir).sha256, int(ids.numel()))
    sensitivity_file = run_dir.root / layout.VALIDATION / "allocation" / f"sensitivity-{key}.json"
    with progress_bar(f"{variant}: per-tensor sensitivity", len(candidates.tensors), "tensors", console) as advance:
        sensitivity = measure_sensitivity(checkpoint, candidates, ids, sensitivity_file, key,
                                          lambda text: console.print(f"{variant}: {text}"), advance)
    mode = settings.mode
    cap = settings.max_bits_per_weight
    cap_bits = None if cap is None else cap * candidates.total_elements - candidates.fixed_bits
    frontier = knapsack_items(candidates, sensitivity, cap_bits)
    record: dict[str, Any] = {
        "variant": variant, "name": name or variant, "format": manifest.get("format"), "backend": candidates.backend, "mode": mode,
        "max_bits_per_weight": cap, "max_gate_runs": settings.max_gate_runs, "candidate_types": candidates.types(),
        "sensitivity": {"file": str(sensitivity_file.relative_to(run_dir.root)), "tokens": sensitivity["tokens"],
                        "text": "calibration windows (never the gate's)", "method": sensitivity["method"],
                        "seconds": sensitivity.get("seconds")},
        "smallest_bits_per_weight": round((frontier.smallest_bits + candidates.fixed_bits) / candidates.total_elements, 4),
        "runs": [], "recovered": None, "gap": None, "outcome": "",
    }
    if cap_bits is not None and frontier.within(cap_bits) is None:
        record["outcome"] = (f"no assignment fits {cap} bits/weight: the smallest candidate types already need "
                             f"{record['smallest_bits_per_weight']} bits/weight")
        return _write(run_dir, record, started)

    def trial(assignment: Assignment, target: float | None) -> dict[str, Any] | None:
        return _build_and_gate(run_dir, variant, spec, assignment, target, candidates, baseline, thresholds, options,
                               console, record)

    if mode == "budget":
        trial(frontier.within(cap_bits), None)
    else:
        search_target(frontier, cap_bits, thresholds.max_kl_mean, settings.max_gate_runs, trial, record,
                      lambda a: candidates.bits_per_weight(candidates.expand(a.types)), settings.max_bits_per_weight)
    passing = [r for r in record["runs"] if r["passed"]]
    if passing:
        best = min(passing, key=lambda r: r["bits_per_weight"])
        record["recovered"] = best["variant"]
        record["outcome"] = (f"{best['variant']} passes at {best['bits_per_weight']:.3f} bits/weight "
                             f"after {len(record['runs'])} gate run(s)")
    elif record["runs"] and not record["outcome"]:
        last = record["runs"][-1]
        record["outcome"] = f"{last['variant']} ({last['bits_per_weight']:.3f} bits/weight) fails: {', '.join(last['failed_checks'])}"
        if record["gap"]:
            record["outcome"] += f" ({record['gap']['text']})"
    record["gate_runs"] = len(record["runs"])
    return _write(run_dir, record, started)


def _build_and_gate(run_dir, variant, spec: VariantSpec, assignment: Assignment, target, candidates: CandidateSet,
                    baseline, thresholds, options, console, record) -> dict[str, Any] | None:
    name = f"{record['name']}-mix{len(record['runs']) + 1}"
    types = candidates.expand(assignment.types)
    candidate = spec.model_copy(update={"name": name, "overrides": overrides_for(types)})
    [made] = run_quantize(run_dir, [candidate], console, keep_going=True)
    predicted_bpw = candidates.bits_per_weight(types)
    if not made.ok:
        record["outcome"] = f"building {name} failed: {made.error}"
        return None
    result = validate_variant(run_dir, name, baseline, thresholds, options, console)
    checks = result["checks"]
    run = {
        "variant": name, "target_kl": target, "predicted_kl": assignment.error,
        "predicted_bits_per_weight": round(predicted_bpw, 4), "bits_per_weight": made.bits_per_weight,
        "passed": result["passed"], "failed_checks": result["failed_checks"], "gate_ratio": round(gate_ratio(result), 4),
        "kl_mean": (checks.get("kl_mean") or {}).get("value"),
        "perplexity_delta": (checks.get("perplexity") or {}).get("value"),
        "top1_agreement": (checks.get("top1_agreement") or {}).get("value"),
        "types": types,
    }
    record["runs"].append(run)
    console.print(f"{variant}: {name} at {made.bits_per_weight:.3f} bits/weight (predicted KL {assignment.error:.4f}): "
                  f"{'passes' if run['passed'] else 'fails ' + ', '.join(run['failed_checks'])}")
    return run


def _write(run_dir: RunDir, record: dict[str, Any], started: float) -> dict[str, Any]:
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record["wall_time_s"] = round(time.time() - started, 1)
    atomic_write_json(allocation_path(run_dir, record["name"]), record)
    return record
