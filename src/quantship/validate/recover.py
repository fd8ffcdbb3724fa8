"""Automatic mixed precision: keep the most sensitive blocks at higher precision until the gate passes.

Each step requantizes the failing variant through the quantize stage itself
(`run_quantize`, so the result is an ordinary variant with a manifest) with one
more batch of blocks, ranked by sensitivity.py, overridden to 8-bit (bf16 when the
scheme is already 8-bit), then validates it. Works for both backends: llm-compressor
variants get W8A16 blocks, GGUF variants Q8_0 tensors (`--tensor-type` rules). It stops at the first passing variant,
when the next step would exceed the bits-per-weight budget, or when every block but
one is overridden. A step is screened first on the baseline windows alone (perplexity,
KL, top-1: one pass, a fraction of the full gate's time); only a step that passes
the screen gets the full validation. Every step is recorded in
validation/<variant>.recovery.json.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import ValidationError
from rich.console import Console

from quantship import layout
from quantship.errors import InputError
from quantship.formats.identify import identify
from quantship.models.loading import load_tokenizer
from quantship.options import RecoverOptions, Thresholds
from quantship.progress import progress_bar
from quantship.quantize.gguf_types import OVERRIDE_TYPES
from quantship.quantize.spec import LayerOverride, VariantSpec
from quantship.quantize.variants import run_quantize
from quantship.rundir import RunDir, atomic_write_json
from quantship.validate.baseline_data import BaselineData
from quantship.validate.gate import failed_checks
from quantship.validate.scorers import open_scorer
from quantship.validate.sensitivity import block_sensitivity, variant_weights
from quantship.validate.variant import ValidateOptions, measure_windows, validate_variant, variant_manifest
from quantship.validate.verdicts import VALIDATION_DIR

# quant methods whose variants --recover can requantize with per-block overrides
RECOVERABLE = ("compressed-tensors", "gguf")


def recovery_path(run_dir: RunDir, variant: str):
    return run_dir.root / VALIDATION_DIR / f"{variant}.recovery.json"


def _source_spec(variant: str, manifest: dict[str, Any]) -> VariantSpec:
    """The variant's spec as the user gave it: options left at their defaults stay unset (GGUF refuses set llm-compressor options)."""
    try:
        fields = VariantSpec.model_fields
        return VariantSpec(
            **{k: v for k, v in manifest["params"].items() if k not in fields or v != fields[k].get_default(call_default_factory=True)}
        )
    except (KeyError, TypeError, ValidationError):
        raise InputError(
            f"variant {variant!r} was not produced by `quantship quantize`",
            "recover variants of the quantize stage",
        ) from None


def recover_variant(
    run_dir: RunDir, variant: str, baseline: BaselineData, thresholds: Thresholds, options: ValidateOptions,
    recover: RecoverOptions, console: Console,
) -> dict[str, Any]:
    manifest = variant_manifest(run_dir, variant)
    spec = _source_spec(variant, manifest)
    folder = run_dir.stage_dir(layout.variant(variant))
    artifact = identify(folder)
    if artifact.quant_method not in RECOVERABLE:
        raise InputError(
            f"--recover needs an llm-compressor or GGUF variant; {variant!r} is {artifact.label}",
            "recover a compressed-tensors or GGUF variant of the quantize stage",
        )
    started = time.time()
    bits = manifest.get("bits_per_weight")
    record: dict[str, Any] = {
        "variant": variant,
        "format": artifact.label,
        "scheme": manifest.get("scheme"),
        "bits_per_weight": bits,
        "budget_bits_per_weight": recover.max_bits_per_weight,
        "steps": [],
        "recovered": None,
        "outcome": "",
    }
    if bits is not None and bits >= recover.max_bits_per_weight:
        record["outcome"] = (f"{variant} already needs {bits:.3f} bits/weight, not under the budget of "
                             f"{recover.max_bits_per_weight}: every step only adds bits")
        return _write_record(run_dir, record, started)
    ids = baseline.plan.input_ids[:1, : recover.sensitivity_tokens]
    eval_dtype = baseline.summary["eval"]["dtype"]
    with console.status(f"{variant}: dequantizing the variant's weights ({artifact.label})"):
        weights = variant_weights(baseline.checkpoint, artifact, eval_dtype)
    with progress_bar(f"{variant}: per-block sensitivity", _blocks(baseline.checkpoint), "blocks", console) as advance:
        ranking = block_sensitivity(baseline.checkpoint, weights, ids, eval_dtype, advance)
    del weights
    precision = "bf16" if _eight_bit(manifest.get("scheme")) else "8bit"
    record.update(
        sensitivity={"layers": ranking, "tokens": int(ids.numel()), "method": "KL when only this block is quantized",
                     "seconds": round(time.time() - started, 1)},
        precision=precision,
        kept_type=OVERRIDE_TYPES[precision] if artifact.container == "gguf" else {"8bit": "W8A16", "bf16": "bf16"}[precision],
    )
    kept = 0
    if len(ranking) < 2:
        record["outcome"] = "fewer than two quantized blocks: nothing can be kept at higher precision"
    while len(ranking) >= 2 and kept < len(ranking) - 1:
        kept = min(kept + recover.blocks_per_step, len(ranking) - 1)
        overrides = [*spec.overrides, *(LayerOverride(pattern=r["pattern"], precision=precision) for r in ranking[:kept])]
        candidate = spec.model_copy(update={"name": f"{variant}-mp{kept}", "overrides": overrides})
        [made] = run_quantize(run_dir, [candidate], console, keep_going=True)
        step = {"variant": candidate.name, "kept_blocks": [r["layer"] for r in ranking[:kept]], "quantize_status": made.status,
                "bits_per_weight": made.bits_per_weight, "error": made.error}
        record["steps"].append(step)
        if not made.ok:
            record["outcome"] = f"requantizing failed: {made.error}"
            break
        if made.bits_per_weight is not None and made.bits_per_weight > recover.max_bits_per_weight:
            step["over_budget"] = True
            record["outcome"] = (
                f"{candidate.name} needs {made.bits_per_weight:.3f} bits/weight, over the budget of {recover.max_bits_per_weight}"
            )
            break
        screen = _screen(run_dir, candidate.name, baseline, thresholds, options, console)
        if screen is not None and screen["failed_checks"]:
            step.update(passed=False, screened=True, **screen)
            continue
        result = validate_variant(run_dir, candidate.name, baseline, thresholds, options, console)
        step.update(passed=result["passed"], failed_checks=result["failed_checks"],
                    perplexity_delta=(result["checks"].get("perplexity") or {}).get("value"))
        if result["passed"]:
            record.update(recovered=candidate.name, outcome=f"{candidate.name} passes at {made.bits_per_weight:.3f} bits/weight")
            break
    if record["steps"] and not record["outcome"]:
        record["outcome"] = "every block but one is kept at higher precision; the gate still fails"
    return _write_record(run_dir, record, started)


def _write_record(run_dir: RunDir, record: dict[str, Any], started: float) -> dict[str, Any]:
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record["wall_time_s"] = round(time.time() - started, 1)
    atomic_write_json(recovery_path(run_dir, record["variant"]), record)
    return record


def _screen(run_dir: RunDir, variant: str, baseline: BaselineData, thresholds: Thresholds, options: ValidateOptions,
            console: Console) -> dict[str, Any] | None:
    """The window checks alone; None when they cannot run (the full validation then records why)."""
    eval_ = baseline.summary["eval"]
    try:
        scorer = open_scorer(run_dir.stage_dir(layout.variant(variant)), load_tokenizer(baseline.checkpoint),
                             eval_["dtype"], eval_["device"], max(int(baseline.plan.input_ids.shape[1]), 512))
    except Exception:  # validate_variant records the same failure as a failed check
        return None
    try:
        checks, delta = measure_windows(scorer, baseline, thresholds, options, console, {})
    except Exception:  # as above
        return None
    finally:
        scorer.close()
    return {"failed_checks": failed_checks(checks), "perplexity_delta": delta}


def _eight_bit(scheme: str | None) -> bool:
    """Already 8-bit (W8A16, FP8, GGUF Q8_0): kept blocks go to bf16 instead."""
    name = (scheme or "").upper()
    return any(tag in name for tag in ("W8", "FP8")) or name.startswith("Q8")


def _blocks(checkpoint) -> int:
    return int(json.loads((checkpoint / "config.json").read_text(encoding="utf-8")).get("num_hidden_layers", 0))
