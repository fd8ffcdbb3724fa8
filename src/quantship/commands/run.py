"""`quantship run`: the whole pipeline from one pipeline.yaml, resumable."""

from __future__ import annotations

import signal
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        pipeline: Path = typer.Argument(..., help="pipeline.yaml (see examples/ and docs/pipeline.md)."),
        start: str = typer.Option(
            None, "--from", help="First stage to run: plan, baseline, calibrate, quantize, validate, serve, bench, rollout."
        ),
        until: str = typer.Option(None, "--until", help="Last stage to run."),
        force: bool = typer.Option(False, "--force", help="Redo stages even if their inputs and options are unchanged."),
        check: bool = typer.Option(False, "--check", help="Only validate pipeline.yaml and print the run directory."),
    ) -> None:
        """Baseline, calibrate, quantize, validate (gate + report), serve and bench, in one run directory.

        Finished stages whose inputs are unchanged are skipped on a rerun. Exit 1 when no
        variant passes the gate (nothing is served then), 2 for bad input.
        """
        from quantship.errors import QuantshipError
        from quantship.pipeline.config import load_pipeline
        from quantship.pipeline.runner import Pipeline, stage_range
        from quantship.progress import stderr_console

        config = load_pipeline(pipeline)
        stages = stage_range(start, until)
        console = stderr_console()
        runner = Pipeline(config, Path.cwd(), console, force=force)
        if check:
            typer.echo(f"{pipeline}: valid; run directory {runner.run.root}; stages {', '.join(stages)}")
            return
        # SIGTERM (a CI job's cancel, `kill`) must stop the servers the run started, as Ctrl-C does.
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            result = runner.execute(stages)
        except QuantshipError:
            _print_summary(runner.result)
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
        _print_summary(result)
        for label, value in result.outputs.items():
            typer.echo(f"{label}: {value}")


def _print_summary(result) -> None:
    from rich.console import Console
    from rich.table import Table

    if not result.stages:  # refused before the first stage
        return
    table = Table(title=f"quantship run: {result.run_dir}")
    for column in ("stage", "status", "time", "detail"):
        table.add_column(column, overflow="fold")
    colours = {"ran": "green", "kept": "cyan", "failed": "red", "off": "dim", "not run": "dim"}
    for stage in result.stages:
        seconds = f"{stage.seconds:.0f} s" if stage.status in ("ran", "failed") else ""
        table.add_row(stage.stage, f"[{colours[stage.status]}]{stage.status}[/]", seconds, stage.detail)
    Console(width=160).print(table)


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt
