"""`quantship plan`: format, serving stack, memory budget, replicas and TP for a target."""

from __future__ import annotations

from pathlib import Path

import typer

from quantship.commands.common import name_option, resolve_run_dir, run_dir_option
from quantship.rundir import RunDir

DEFAULT_CONTEXT = 8192


def register(app: typer.Typer) -> None:
    @app.command(
        "plan",
        help="Pick format and serving stack for the hardware; budget memory, replicas, tensor parallelism.",
    )
    def plan(
        model: Path = typer.Option(..., "--model", help="Checkpoint folder or its config.json."),
        hardware: str = typer.Option(
            ..., "--hardware", help="h100, h200, a100-80gb, a100-40gb, l4, a10g, b200, cpu, or a profile YAML."
        ),
        variant: Path | None = typer.Option(
            None, "--variant", help="A quantized variant (folder or .gguf): its format and real file sizes are used."
        ),
        context: int | None = typer.Option(
            None, "--context", min=1, help=f"Tokens per sequence (default {DEFAULT_CONTEXT} or the model's maximum)."
        ),
        concurrency: int = typer.Option(32, "--concurrency", min=1, help="Concurrent sequences per replica."),
        format: str = typer.Option(
            "auto", "--format", help="auto, or bf16, w8a8-fp8, w8a8-int8, w4a16, gguf-q8_0, gguf-q4_k_m, nf4."
        ),
        stack: str = typer.Option("auto", "--stack", help="auto, vllm, llamacpp or transformers."),
        kv_cache_dtype: str = typer.Option("auto", "--kv-cache-dtype", help="auto (model dtype) or fp8."),
        devices: int = typer.Option(
            1, "--devices", min=1, help="Devices available (GPUs) for tensor parallelism and replicas."
        ),
        max_memory_utilization: float = typer.Option(
            0.90, "--max-memory-utilization", min=0.05, max=0.99,
            help="Share of each device's memory all replicas may use.",
        ),
        bandwidth_gbs: float | None = typer.Option(
            None, "--bandwidth-gbs", min=0.1, help="Memory bandwidth override (CPU default: measured)."
        ),
        measurements: Path | None = typer.Option(
            None,
            "--measurements",
            help="JSON of measured decode tokens/s per format (e.g. an earlier plan/measurements.json); re-ranks.",
        ),
        measure: bool = typer.Option(
            False,
            "--measure",
            help="Serve and bench the run's bf16 checkpoint and each variant this machine can serve, one at a time, "
            "and rank formats by the measured tokens/s (writes plan/measurements.json; needs --run-dir with variants).",
        ),
        measure_concurrency: int = typer.Option(
            16, "--measure-concurrency", min=1, help="--measure: concurrent requests while measuring."
        ),
        measure_tokens: int = typer.Option(64, "--measure-tokens", min=1, help="--measure: output tokens per request."),
        measure_requests: int = typer.Option(
            32, "--measure-requests", min=1, help="--measure: measured requests per format (after one warm-up batch)."
        ),
        run_dir: Path | None = run_dir_option(),
        name: str = name_option(),
    ) -> None:
        from quantship.plan import api
        from quantship.plan.measure import MeasureSettings

        rundir = RunDir(resolve_run_dir(run_dir, name))
        request = api.PlanArgs(
            model=model, hardware=hardware, variant=variant, context=context or DEFAULT_CONTEXT,
            context_given=context is not None, concurrency=concurrency, format=format, stack=stack,
            kv_cache_dtype=kv_cache_dtype, devices=devices, max_memory_utilization=max_memory_utilization,
            bandwidth_gbs=bandwidth_gbs, measurements=measurements, measure=measure, run_dir=rundir.root,
            measure_settings=MeasureSettings(
                concurrency=measure_concurrency, max_tokens=measure_tokens, requests=measure_requests
            ),
        )
        result = api.plan_from_args(request)
        api.write_plan(rundir, request, result)
        api.print_plan(result.plan, str(result.model_folder), result.measured)
        typer.echo(f"wrote {rundir.stage_dir('plan') / 'plan.json'}", err=True)
        if result.measured is not None:
            typer.echo(f"wrote {rundir.stage_dir('plan') / 'measurements.json'}", err=True)

