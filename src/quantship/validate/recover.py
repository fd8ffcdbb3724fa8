"""Automatic mixed precision: keep the most sensitive blocks at higher precision until the gate passes.

Each step requantizes the failing variant through the quantize stage itself
(`run_quantize`, so the result is an ordinary variant with a manifest) with one
more batch of blocks, ranked by sensitivity.py, overridden to 8-bit (bf16 when the
scheme is already 8-bit), then validates it. It stops at the first passing variant,
when the next step would exceed the bits-per-weight budget, or when every block but
one is overridden. Every step is recorded in validation/<variant>.recovery.json.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from rich.console import Console

from quantship.errors import InputError
from quantship.progress import progress_bar
from quantship.quantize.spec import LayerOverride, VariantSpec
from quantship.quantize.stage import run_quantize
from quantship.rundir import RunDir, atomic_write_json
from quantship.validate.baseline_data import BaselineData
from quantship.validate.gate import Thresholds
from quantship.validate.run import VALIDATION_DIR, ValidateOptions, validate_variant, variant_manifest
from quantship.validate.sensitivity import block_sensitivity


@dataclass
class RecoverOptions:
    max_bits_per_weight: float = 8.0
    blocks_per_step: int = 2
    sensitivity_tokens: int = 256


def recovery_path(run_dir: RunDir, variant: str):
    return run_dir.root / VALIDATION_DIR / f"{variant}.recovery.json"


def _source_spec(variant: str, manifest: dict[str, Any]) -> VariantSpec:
    try:
        return VariantSpec(**manifest["params"])
    except (KeyError, TypeError, ValidationError):
        raise InputError(f"variant {variant!r} was not produced by `quantship quantize`", "recover variants of the quantize stage") from None


def recover_variant(
    run_dir: RunDir, variant: str, baseline: BaselineData, thresholds: Thresholds, options: ValidateOptions,
    recover: RecoverOptions, console: Console,
) -> dict[str, Any]:
    manifest = variant_manifest(run_dir, variant)
    spec = _source_spec(variant, manifest)
    if manifest.get("format") != "compressed-tensors":
        raise InputError(
            f"--recover ranks layers on compressed-tensors variants; {variant!r} is {manifest.get('format')}",
            "recover an llm-compressor variant (GGUF recovery is not built yet, see docs/validate.md)",
        )
    ids = baseline.plan.input_ids[:1, : recover.sensitivity_tokens]
    eval_dtype = baseline.summary["eval"]["dtype"]
    folder = run_dir.stage_dir(f"variants/{variant}")
    with progress_bar(f"{variant}: per-block sensitivity", _blocks(folder), "blocks", console) as advance:
        ranking = block_sensitivity(baseline.checkpoint, folder, manifest, ids, eval_dtype, advance)
    eight_bit = not any(tag in (manifest.get("scheme") or "").upper() for tag in ("W8", "FP8"))
    precision = "8bit" if eight_bit else "bf16"
    record: dict[str, Any] = {
        "variant": variant,
        "budget_bits_per_weight": recover.max_bits_per_weight,
        "sensitivity": {"layers": ranking, "tokens": int(ids.numel()), "method": "KL when only this block is quantized"},
        "precision": precision,
        "steps": [],
        "recovered": None,
        "outcome": "",
    }
    kept = 0
    if len(ranking) < 2:
        record["outcome"] = "fewer than two quantized blocks: nothing can be kept at higher precision"
    while len(ranking) >= 2:
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
            record["outcome"] = f"{candidate.name} needs {made.bits_per_weight:.3f} bits/weight, over the budget of {recover.max_bits_per_weight}"
            break
        result = validate_variant(run_dir, candidate.name, baseline, thresholds, options, console)
        step.update(passed=result["passed"], failed_checks=result["failed_checks"])
        if result["passed"]:
            record.update(recovered=candidate.name, outcome=f"{candidate.name} passes at {made.bits_per_weight:.3f} bits/weight")
            break
        if kept >= len(ranking) - 1:
            record["outcome"] = "every block but one is kept at higher precision; the gate still fails"
            break
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write_json(recovery_path(run_dir, variant), record)
    return record


def _blocks(folder) -> int:
    return int(json.loads((folder / "config.json").read_text(encoding="utf-8")).get("num_hidden_layers", 0))
