"""`quantship calibrate`: build and validate the calibration windows."""

from pathlib import Path

import typer

from quantship.commands.common import name_option, option, resolve_run_dir, run_dir_option
from quantship.options import CalibrationOptions


def register(app: typer.Typer) -> None:
    @app.command("calibrate")
    def calibrate(
        model: Path = typer.Option(None, "--model", help="Checkpoint whose tokenizer to use (default: the run's baseline)."),
        run_dir: Path = run_dir_option(),
        name: str = name_option(),
        source: str = option(CalibrationOptions, "source", "--source"),
        pad_source: str = option(CalibrationOptions, "pad_source", "--pad-source"),
        samples: int = option(CalibrationOptions, "samples", "--samples"),
        seq_len: int = option(CalibrationOptions, "seq_len", "--seq-len"),
        seed: int = option(CalibrationOptions, "seed", "--seed"),
        chat: bool = option(CalibrationOptions, "chat", "--chat"),
        force: bool = typer.Option(False, "--force", help="Rebuild even if inputs and options are unchanged."),
    ) -> None:
        """Build and validate calibration token windows from a text source."""
        from quantship.progress import stderr_console
        from quantship.rundir import RunDir
        from quantship.stages import Context
        from quantship.stages import calibrate as stage

        root = resolve_run_dir(run_dir, name)
        run = RunDir(root)
        options = CalibrationOptions(source=source, pad_source=pad_source, samples=samples, seq_len=seq_len, seed=seed, chat=chat)
        console = stderr_console()
        outcome = stage.run(run, options, Context(console, force=force), model=model)
        if outcome.status == "kept":
            console.print("calibration: inputs and options unchanged, kept the existing windows (--force to redo)")
        typer.echo(f"calibration {outcome.detail}; run dir {root}")
