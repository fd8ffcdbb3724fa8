"""`quantship plan`: format, serving stack, memory budget, replicas and TP for a target."""

from __future__ import annotations

from pathlib import Path

import typer

from quantship.commands.common import name_option, option, resolve_run_dir, run_dir_option
from quantship.options import PlanOptions
from quantship.plan.measure import MeasureSettings
from quantship.rundir import RunDir


def register(app: typer.Typer) -> None:
    @app.command(
        "plan",
        help="Pick format and serving stack for the hardware; budget memory, replicas, tensor parallelism.",
    )
    def plan(
        model: Path = typer.Option(..., "--model", help="Checkpoint folder or its config.json."),
        hardware: str = option(PlanOptions, "hardware", "--hardware"),
        variant: Path | None = typer.Option(
            None, "--variant", help="A quantized variant (folder or .gguf): its format and real file sizes are used."
        ),
        context: int | None = option(PlanOptions, "context", "--context"),
        concurrency: int = option(PlanOptions, "concurrency", "--concurrency"),
        format: str = option(PlanOptions, "format", "--format"),
        stack: str = option(PlanOptions, "stack", "--stack"),
        kv_cache_dtype: str = option(PlanOptions, "kv_cache_dtype", "--kv-cache-dtype"),
        devices: int = option(PlanOptions, "devices", "--devices"),
        max_memory_utilization: float = option(PlanOptions, "max_memory_utilization", "--max-memory-utilization"),
        bandwidth_gbs: float | None = option(PlanOptions, "bandwidth_gbs", "--bandwidth-gbs"),
        measurements: Path | None = option(PlanOptions, "measurements", "--measurements"),
        measure: bool = typer.Option(
            False,
            "--measure",
            help="Serve and bench the run's bf16 checkpoint and each variant this machine can serve, one at a time, "
            "and rank formats by the measured tokens/s (writes plan/measurements.json; needs --run-dir with variants).",
        ),
        measure_concurrency: int = option(
            MeasureSettings, "concurrency", "--measure-concurrency", help="--measure: concurrent requests while measuring."
        ),
        measure_tokens: int = option(
            MeasureSettings, "max_tokens", "--measure-tokens", help="--measure: output tokens per request."
        ),
        measure_requests: int = option(
            MeasureSettings, "requests", "--measure-requests",
            help="--measure: measured requests per format (after one warm-up batch).",
        ),
        run_dir: Path | None = run_dir_option(),
        name: str = name_option(),
    ) -> None:
        from quantship.plan import api
        from quantship.progress import stderr_console
        from quantship.stages import Context
        from quantship.stages import plan as stage

        rundir = RunDir(resolve_run_dir(run_dir, name))
        options = PlanOptions(
            hardware=hardware, context=context, concurrency=concurrency, format=format, stack=stack,
            kv_cache_dtype=kv_cache_dtype, devices=devices, max_memory_utilization=max_memory_utilization,
            bandwidth_gbs=bandwidth_gbs, measurements=measurements,
        )
        settings = MeasureSettings(concurrency=measure_concurrency, max_tokens=measure_tokens, requests=measure_requests)
        outcome = stage.run(rundir, options, Context(stderr_console()), model=model, variant=variant, measure=measure,
                            measure_settings=settings)
        result = outcome.result
        api.print_plan(result.plan, str(result.model_folder), result.measured)
        typer.echo(f"wrote {rundir.stage_dir('plan') / 'plan.json'}", err=True)
        if result.measured is not None:
            typer.echo(f"wrote {rundir.stage_dir('plan') / 'measurements.json'}", err=True)

