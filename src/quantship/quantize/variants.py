"""The quantize stage: every requested variant into variants/<name>/, each with a manifest.

Order of work: every variant's backend refuses impossible requests first (before any
model is loaded), then the variants run one by one, each in a staging folder that is
published only when complete. A variant whose inputs and options are unchanged is
skipped. With keep_going a refused or failed variant is recorded and the others go on;
without it the first one stops the stage. Either way a failed variant leaves nothing.
"""

from __future__ import annotations

import errno
import math
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from quantship import layout
from quantship.data.calibration import STAGE as CALIBRATION_STAGE
from quantship.data.calibration import load_calibration
from quantship.errors import InputError, QuantshipError
from quantship.formats.identify import identify
from quantship.layout import baseline_checkpoint
from quantship.models.checkpoint import checkpoint_files
from quantship.quantize.base import QuantizeContext
from quantship.quantize.registry import backend_for
from quantship.quantize.spec import VariantSpec
from quantship.rundir import RunDir, stage_fingerprint

CALIBRATED_METHODS = frozenset({"gptq", "awq", "smoothquant-gptq", "fp8-static"})


@dataclass
class VariantResult:
    """One row of the summary: what happened to a variant."""

    name: str
    method: str
    status: str  # "done" | "skipped" (unchanged) | "refused" (check failed) | "failed"
    format: str | None = None
    size_bytes: int | None = None
    bits_per_weight: float | None = None
    wall_time_s: float | None = None
    peak_rss_bytes: int | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("done", "skipped")


def variant_stage(name: str) -> str:
    return layout.variant(name)


def completed_variants(run_dir: RunDir) -> list[str]:
    """Names of the run's finished variants (a manifest marks a published stage)."""
    folder = run_dir.stage_dir(layout.VARIANTS)
    return sorted(p.parent.name for p in folder.glob("*/manifest.json")) if folder.is_dir() else []


def run_quantize(
    run_dir: RunDir,
    specs: list[VariantSpec],
    console: Console,
    force: bool = False,
    keep_going: bool = False,
) -> list[VariantResult]:
    """Produce `specs` in order; returns one result per spec (see the module docstring)."""
    if not specs:
        raise InputError("no variants requested", "pass --variant NAME:METHOD[:SCHEME] or --config variants.yaml")
    duplicates = [n for n, c in Counter(s.name for s in specs).items() if c > 1]
    if duplicates:
        raise InputError(f"variant names must be unique, repeated: {', '.join(duplicates)}", "rename the repeated variants")
    checkpoint = baseline_checkpoint(run_dir)
    if not checkpoint.is_dir():
        raise InputError(
            f"the run's baseline checkpoint {checkpoint} no longer exists",
            f"restore it, or rerun `quantship baseline --model PATH --run-dir {run_dir.root}`",
        )
    calibration = load_calibration(run_dir) if run_dir.manifest(CALIBRATION_STAGE) is not None else None
    ctx = QuantizeContext(checkpoint=checkpoint, calibration=calibration, run_dir=run_dir, console=console)
    with console.status("hashing the baseline checkpoint"):
        checkpoint_hashes = run_dir.hash_inputs({f"model/{k}": v for k, v in checkpoint_files(checkpoint).items()})

    results: dict[str, VariantResult] = {}
    names = [s.name for s in specs]
    for index, spec in enumerate(specs):
        if _source_in_batch(spec, names[:index]):
            continue  # checked when its turn comes, after its source exists
        refusal = _check(spec, ctx, keep_going)
        if refusal is not None:
            results[spec.name] = refusal

    for index, spec in enumerate(specs):
        if spec.name in results:
            continue
        if _source_in_batch(spec, names[:index]):
            source = results[spec.source]
            if not source.ok:
                results[spec.name] = _stop(spec, "refused", f"its source variant {spec.source!r} was {source.status}", keep_going)
                continue
            refusal = _check(spec, ctx, keep_going)
            if refusal is not None:
                results[spec.name] = refusal
                continue
        results[spec.name] = _produce(spec, ctx, checkpoint_hashes, force, keep_going)
    ordered = [results[n] for n in names]
    print_summary(ordered, console)
    return ordered


def _source_in_batch(spec: VariantSpec, earlier: list[str]) -> bool:
    return spec.method == "convert" and spec.source in earlier


def _check(spec: VariantSpec, ctx: QuantizeContext, keep_going: bool) -> VariantResult | None:
    try:
        backend_for(spec).check(spec, ctx)
    except QuantshipError as error:
        return _stop(spec, "refused", error.one_line(), keep_going, error)
    return None


def _stop(spec: VariantSpec, status: str, message: str, keep_going: bool, error: QuantshipError | None = None) -> VariantResult:
    """Record a refused/failed variant with keep_going; otherwise stop the stage."""
    if not keep_going:
        raise error if error is not None else InputError(f"variant {spec.name!r}: {message}", "fix it, or pass --keep-going")
    return VariantResult(spec.name, spec.method, status, error=message)


def stage_inputs(spec: VariantSpec, ctx: QuantizeContext, checkpoint_hashes: dict[str, str]) -> dict[str, str]:
    """What a variant depends on: the checkpoint, the calibration it uses, its source variant."""
    inputs = dict(checkpoint_hashes)
    if ctx.calibration is not None and (spec.method in CALIBRATED_METHODS or spec.imatrix):
        inputs["calibration"] = ctx.calibration.sha256
    if spec.method == "convert" and spec.source:
        source = ctx.run_dir.manifest(variant_stage(spec.source)) or {}
        inputs["source_variant"] = str(source.get("fingerprint"))
    return inputs


def _produce(spec: VariantSpec, ctx: QuantizeContext, checkpoint_hashes: dict[str, str], force: bool, keep_going: bool) -> VariantResult:
    name = variant_stage(spec.name)
    params = spec.model_dump(mode="json")
    inputs = stage_inputs(spec, ctx, checkpoint_hashes)
    run_dir = ctx.run_dir
    if not force and run_dir.is_current(name, stage_fingerprint(name, params, inputs)):
        ctx.console.print(f"{spec.name}: inputs and options unchanged, kept the existing variant (--force to redo)")
        return result_from_manifest(spec, "skipped", run_dir.manifest(name) or {})
    backend = backend_for(spec)
    try:
        with run_dir.stage(name, params, inputs) as stage:
            output = backend.quantize(spec, ctx, stage.staging)
            artifact = identify(stage.staging)
            files = [p for p in stage.staging.rglob("*") if p.is_file()]
            stage.extra.update(
                method=spec.method,
                backend=backend.name,
                scheme=output.details.get("scheme", spec.scheme),
                group_size=output.details.get("group_size", spec.group_size),
                overrides=[o.model_dump() for o in spec.overrides],
                calibration_sha256=inputs.get("calibration"),
                format=artifact.label,
                artifact=artifact.as_record(),
                bits_per_weight=output.bits_per_weight,
                size_bytes=sum(p.stat().st_size for p in files),
                details=output.details,
                warnings=output.warnings,
                lineage={
                    "baseline_checkpoint": str(ctx.checkpoint),
                    "source_variant": spec.source,
                    **(output.details.get("lineage") or {}),
                },
            )
    except KeyboardInterrupt:
        raise
    except OSError as error:
        if error.errno != errno.ENOSPC:
            return _failure(spec, ctx, error, keep_going)
        out_of_disk = InputError(
            f"variant {spec.name!r}: out of disk space in {run_dir.root} while writing it (nothing was kept)",
            "free disk space or use a run directory on a bigger disk",
        )
        return _stop(spec, "failed", out_of_disk.one_line(), keep_going, out_of_disk)
    except Exception as error:  # any library failure: nothing was published, report it in one line
        return _failure(spec, ctx, error, keep_going)
    manifest = run_dir.manifest(name) or {}
    for warning in manifest.get("warnings", []):
        ctx.console.print(f"[yellow]warning:[/] {spec.name}: {warning}")
    return result_from_manifest(spec, "done", manifest)


def _failure(spec: VariantSpec, ctx: QuantizeContext, error: Exception, keep_going: bool) -> VariantResult:
    if isinstance(error, QuantshipError):
        return _stop(spec, "failed", error.one_line(), keep_going, error)
    tail = "".join(traceback.format_exception(error)[-3:]).rstrip()
    ctx.console.print(f"[dim]{tail}[/]")
    first = (str(error).strip().splitlines() or [""])[0]
    wrapped = QuantshipError(
        f"variant {spec.name!r} failed in its backend ({type(error).__name__}: {first}); nothing was kept",
        "see the traceback above; --keep-going lets the other variants finish",
    )
    return _stop(spec, "failed", wrapped.one_line(), keep_going, wrapped)


def result_from_manifest(spec: VariantSpec, status: str, manifest: dict[str, Any]) -> VariantResult:
    return VariantResult(
        name=spec.name,
        method=spec.method,
        status=status,
        format=manifest.get("format"),
        size_bytes=manifest.get("size_bytes"),
        bits_per_weight=manifest.get("bits_per_weight"),
        wall_time_s=manifest.get("wall_time_s"),
        peak_rss_bytes=manifest.get("peak_rss_bytes"),
        warnings=list(manifest.get("warnings", [])),
    )


def summary_table(results: list[VariantResult]) -> Table:
    """One row per variant; the reasons for refused/failed ones are printed under it."""
    table = Table(title="quantize")
    for column in ("variant", "format", "size MB", "bits/w", "time s", "RSS MB", "status"):
        table.add_column(column, justify="right" if column.endswith(("MB", "/w", " s")) else "left", no_wrap=True)
    for r in results:
        table.add_row(
            r.name,
            r.format or "-",
            f"{r.size_bytes / 1e6:.1f}" if r.size_bytes is not None else "-",
            f"{r.bits_per_weight:.3f}" if r.bits_per_weight is not None else "-",
            f"{r.wall_time_s:.1f}" if r.wall_time_s is not None else "-",
            f"{r.peak_rss_bytes / 1e6:.0f}" if r.peak_rss_bytes is not None else "-",
            {"done": "[green]done[/]", "skipped": "unchanged"}.get(r.status, f"[red]{r.status}[/]"),
        )
    return table


def print_summary(results: list[VariantResult], console: Console) -> None:
    console.print(summary_table(results))
    for r in results:
        if not r.ok:
            console.print(f"[red]{r.name}: {r.status}[/]: {r.error}", soft_wrap=True)


# ---- measured bits per weight, shared by the safetensors formats ----

# compressed-tensors' per-module companions of a quantized weight: storage, not parameters
_COMPANIONS = (
    "weight_scale", "weight_zero_point", "weight_g_idx", "weight_shape", "weight_global_scale",
    "input_scale", "input_zero_point", "input_global_scale", "output_scale", "k_scale", "v_scale",
)
_WEIGHT_STORAGE = ("weight_packed", "weight", "weight_scale", "weight_zero_point", "weight_g_idx")
_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}


@dataclass
class Storage:
    """The tensors of a safetensors checkpoint folder, as written."""

    dtypes: dict[str, str]
    nbytes: dict[str, int]
    logical: dict[str, int]  # parameter name -> element count it stands for
    quantized_modules: list[str]

    @property
    def total_bytes(self) -> int:
        return sum(self.nbytes.values())

    @property
    def parameters(self) -> int:
        return sum(self.logical.values())

    @property
    def bits_per_weight(self) -> float:
        """Bits per parameter over every tensor (same definition as the GGUF reader's)."""
        return self.total_bytes * 8 / self.parameters

    @property
    def quantized_weights(self) -> int:
        return sum(self.logical.get(f"{m}.weight", 0) for m in self.quantized_modules)

    @property
    def quantized_bits_per_weight(self) -> float:
        """Bits per weight of the quantized Linear layers alone: codes + scales + zero points."""
        stored = sum(self.nbytes.get(f"{m}.{s}", 0) for m in self.quantized_modules for s in _WEIGHT_STORAGE)
        return stored * 8 / self.quantized_weights

    def dtype_histogram(self) -> dict[str, int]:
        return dict(sorted(Counter(self.dtypes.values()).items()))


def safetensors_storage(folder: Path) -> Storage:
    """Read every *.safetensors header of `folder`; packed weights count their logical shape."""
    from safetensors import safe_open

    dtypes: dict[str, str] = {}
    nbytes: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}
    packed_shapes: dict[str, list[int]] = {}
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise QuantshipError(f"{folder} holds no .safetensors files", "see the log above")
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                piece = handle.get_slice(key)
                dtype, shape = piece.get_dtype(), list(piece.get_shape())
                dtypes[key], shapes[key] = dtype, shape
                nbytes[key] = math.prod(shape) * _DTYPE_BYTES[dtype]
                if key.endswith(".weight_shape"):
                    packed_shapes[key.removesuffix(".weight_shape")] = [int(v) for v in handle.get_tensor(key).tolist()]
    logical: dict[str, int] = {}
    quantized: list[str] = []
    for key, shape in shapes.items():
        module, _, leaf = key.rpartition(".")
        if leaf in _COMPANIONS:
            if leaf == "weight_scale":
                quantized.append(module)
            continue
        if leaf == "weight_packed":
            logical[f"{module}.weight"] = math.prod(packed_shapes[module])
        else:
            logical[key] = math.prod(shape)
    return Storage(dtypes=dtypes, nbytes=nbytes, logical=logical, quantized_modules=sorted(quantized))
