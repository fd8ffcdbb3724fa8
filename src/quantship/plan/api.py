"""The edge of the plan stage: read config, variant and measurements from disk, plan.

`plan_from_args` is what the CLI (and `quantship run`) calls; everything below it is
pure and takes plain values.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from quantship import layout
from quantship.errors import InputError
from quantship.formats.hardware import HardwareProfile, load_hardware
from quantship.formats.matrix import resolve_format, resolve_stack
from quantship.plan.geometry import (
    ModelGeometry,
    estimate_params,
    geometry_from_config,
    load_config,
    params_from_safetensors,
)
from quantship.plan.measure import MeasureReport, MeasureSettings, load_measurements
from quantship.plan.planner import Plan, Traffic, make_plan
from quantship.plan.render import print_plan
from quantship.plan.variant import VariantInfo, inspect_variant
from quantship.rundir import RunDir, atomic_write_json, read_json, stage_fingerprint

__all__ = ["PlanArgs", "PlanResult", "input_hashes", "plan_from_args", "print_plan", "write_plan"]


class PlanArgs(BaseModel):
    model: Path
    hardware: str
    variant: Path | None = None
    context: int = 8192
    context_given: bool = True
    concurrency: int = 32
    format: str = "auto"
    stack: str = "auto"
    kv_cache_dtype: str = "auto"
    devices: int = 1
    max_memory_utilization: float = 0.90
    bandwidth_gbs: float | None = None
    measurements: Path | None = None
    measure: bool = False
    measure_settings: MeasureSettings = MeasureSettings()
    run_dir: Path | None = None              # where --measure finds variants and writes its benches

    def fingerprint_params(self, result: PlanResult) -> dict[str, Any]:
        """The options that decide the plan, with the defaults resolved."""
        return {
            "hardware": result.plan.hardware.model_dump(mode="json"),
            "context": result.plan.traffic.context,
            "concurrency": self.concurrency,
            "format": self.format,
            "stack": self.stack,
            "kv_cache_dtype": self.kv_cache_dtype,
            "devices": self.devices,
            "max_memory_utilization": self.max_memory_utilization,
            "variant": str(self.variant) if self.variant else None,
            "ranking_basis": result.plan.ranking.basis,
            "ranking_tok_s": result.plan.ranking.tokens_per_s,
            **({"measure": self.measure_settings.model_dump()} if self.measure else {}),
        }


class PlanResult(BaseModel):
    plan: Plan
    model_folder: Path
    config_path: Path
    variant: VariantInfo | None = None
    measured: MeasureReport | None = None    # what --measure took on this machine


# Serves and benches each format on this machine (quantship.stages.measure), given by the caller
# so that the planner never starts a server itself.
Measurer = Callable[[Path, Path, HardwareProfile, MeasureSettings], MeasureReport]


def plan_from_args(args: PlanArgs, measurer: Measurer | None = None) -> PlanResult:
    """Read the inputs the options name and make the plan; `--measure` needs the `measurer`."""
    kv = args.kv_cache_dtype.lower()
    if kv not in {"auto", "fp8"}:
        raise InputError(f"unknown --kv-cache-dtype {args.kv_cache_dtype!r}", "use auto or fp8")
    format_id = "auto" if args.format.lower() == "auto" else resolve_format(args.format)
    stack = "auto" if args.stack.lower() == "auto" else resolve_stack(args.stack)
    if args.measure and args.measurements:
        raise InputError("--measure and --measurements both given", "pass one of them")
    if args.measure and measurer is None:
        raise InputError("--measure is not available from this entry point", "run `quantship plan --measure`")
    if args.measure and args.run_dir is None:
        raise InputError("--measure needs the run directory holding the variants", "pass --run-dir runs/<name>")
    measured = load_measurements(args.measurements) if args.measurements else None

    config, folder = load_config(args.model)
    geo = geometry_from_config(config, name=_model_name(folder, config))
    quantized_checkpoint = "quantization_config" in config
    params = None if quantized_checkpoint else params_from_safetensors(folder)
    params = params or estimate_params(geo)
    variant = inspect_variant(args.variant) if args.variant else None
    if variant is None and quantized_checkpoint:
        variant = inspect_variant(folder)  # --model is itself a quantized checkpoint
    checkpoint = None if quantized_checkpoint else _checkpoint_files(folder, geo)
    hardware = load_hardware(args.hardware, args.bandwidth_gbs)
    context = args.context if args.context_given else min(args.context, geo.max_position_embeddings or args.context)
    plan_inputs = dict(
        geo=geo,
        params=params,
        hardware=hardware,
        traffic=Traffic(context=context, concurrency=args.concurrency),
        format=format_id,
        stack=stack,
        kv_dtype=kv,
        devices=args.devices,
        max_utilization=args.max_memory_utilization,
        variant=variant,
        checkpoint=checkpoint,
    )
    report = None
    if args.measure:
        make_plan(**plan_inputs)  # a plan that cannot be made fails here, before minutes of serving
        report = measurer(args.run_dir, folder, hardware, args.measure_settings)
        measured = report.measurements()
    plan = make_plan(
        **plan_inputs,
        measured=measured.tokens_per_s if measured else None,
        measured_source=measured.source if measured else "",
    )
    if report is not None:  # a measured format's command line names the artifact that was measured
        served = {m.format: m.artifact for m in report.measured}
        for candidate in {id(c): c for c in (*plan.candidates, plan.chosen)}.values():
            candidate.artifact = candidate.artifact or served.get(candidate.format)
    return PlanResult(
        plan=plan, model_folder=folder, config_path=folder / "config.json", variant=variant, measured=report
    )


def write_plan(rundir: RunDir, request: PlanArgs, result: PlanResult) -> bool:
    """plan/plan.json (and measurements.json after --measure), published as one stage.

    False when the published plan already has this fingerprint (same request, inputs and
    result): it is kept as it is, so a resumed pipeline reports it kept.
    """
    params, inputs = request.fingerprint_params(result), input_hashes(rundir, result)
    if rundir.is_current(layout.PLAN, stage_fingerprint(layout.PLAN, params, inputs)):
        return False
    with rundir.stage(layout.PLAN, params, inputs) as stage:
        atomic_write_json(stage.path("plan.json"), result.plan)
        if result.measured is not None:
            atomic_write_json(stage.path("measurements.json"), result.measured.model_dump(mode="json"))
    return True


def read_plan(rundir: RunDir) -> Plan:
    """plan/plan.json as the planner wrote it: the one reader of that file (serve, deploy, the plan stage)."""
    rundir.require(layout.PLAN, "quantship plan --model M --hardware H")
    return Plan.model_validate(read_json(rundir.root / layout.PLAN_JSON))


def input_hashes(rundir: RunDir, result: PlanResult) -> dict[str, str]:
    """Hash the small files the plan read; weight files enter through their sizes."""
    files = {"model_config": result.config_path}
    if result.variant is not None:
        manifest = result.variant.path / "manifest.json"
        config = result.variant.path / "config.json"
        for label, path in (("variant_manifest", manifest), ("variant_config", config)):
            if path.exists():
                files[label] = path
    return rundir.hash_inputs(files)


def _model_name(folder: Path, config: dict) -> str:
    return str(config.get("_name_or_path") or folder.resolve().name)


def _checkpoint_files(folder: Path, geo: ModelGeometry) -> VariantInfo | None:
    """The 16-bit checkpoint's real safetensors sizes: the bf16 candidate's weights."""
    files = sorted(folder.glob("*.safetensors"))
    if not files or geo.dtype_bytes != 2:
        return None
    return VariantInfo(
        path=folder,
        format="bf16",
        weights_bytes=sum(p.stat().st_size for p in files),
        files=[p.name for p in files],
        detected_from="checkpoint safetensors",
    )
