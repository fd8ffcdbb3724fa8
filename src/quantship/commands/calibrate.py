"""`quantship calibrate`: build and validate the calibration windows."""

from pathlib import Path

import typer

from quantship.commands.common import name_option, resolve_run_dir, run_dir_option


def register(app: typer.Typer) -> None:
    @app.command("calibrate")
    def calibrate(
        model: Path = typer.Option(None, "--model", help="Checkpoint whose tokenizer to use (default: the run's baseline)."),
        run_dir: Path = run_dir_option(),
        name: str = name_option(),
        source: str = typer.Option("builtin:calibration", "--source", help="Calibration text (see docs/data.md)."),
        pad_source: str = typer.Option(None, "--pad-source", help="Second source that fills up when the first is short."),
        samples: int = typer.Option(128, "--samples", help="Number of windows (N)."),
        seq_len: int = typer.Option(512, "--seq-len", help="Tokens per window (L)."),
        seed: int = typer.Option(0, "--seed", help="Seed for document order and window choice."),
        chat: bool = typer.Option(False, "--chat", help="Format samples with the tokenizer's chat template."),
        force: bool = typer.Option(False, "--force", help="Rebuild even if inputs and options are unchanged."),
    ) -> None:
        """Build and validate calibration token windows from a text source."""
        from quantship.progress import stderr_console
        from quantship.rundir import RunDir
        from quantship.stages.baseline import baseline_checkpoint
        from quantship.stages.calibrate import CalibrationOptions, run_calibrate

        root = resolve_run_dir(run_dir, name)
        run = RunDir(root)
        options = CalibrationOptions(source=source, pad_source=pad_source, samples=samples, seq_len=seq_len, seed=seed, chat=chat)
        console = stderr_console()
        stats, skipped = run_calibrate(model or baseline_checkpoint(run), run, options, console, force=force)
        if skipped:
            console.print("calibration: inputs and options unchanged, kept the existing windows (--force to redo)")
        typer.echo(
            f"calibration {stats['samples']} x {stats['seq_len']} tokens from {stats['source']}: "
            f"vocabulary coverage {stats['vocab_coverage']:.1%}, duplicates {stats['duplicate_windows']}; "
            f"run dir {root}"
        )
