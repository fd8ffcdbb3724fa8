"""`quantship baseline`: verify a checkpoint and record its reference measurements."""

from pathlib import Path

import typer

from quantship.commands.common import name_option, option, resolve_run_dir, run_dir_option
from quantship.options import BaselineOptions


def register(app: typer.Typer) -> None:
    @app.command("baseline")
    def baseline(
        model: Path = typer.Option(..., "--model", help="Local Hugging Face checkpoint folder."),
        run_dir: Path = run_dir_option(),
        name: str = name_option(),
        eval_source: str = option(BaselineOptions, "eval_source", "--eval-source"),
        window: int = option(BaselineOptions, "window", "--window"),
        stride: int = option(BaselineOptions, "stride", "--stride"),
        max_windows: int = option(BaselineOptions, "max_windows", "--max-windows", min=0),
        batch_size: int = option(BaselineOptions, "batch_size", "--batch-size"),
        topk: int = option(BaselineOptions, "topk", "--topk"),
        max_new_tokens: int = option(BaselineOptions, "max_new_tokens", "--max-new-tokens"),
        dtype: str = option(BaselineOptions, "dtype", "--dtype"),
        allow_pickle: bool = option(BaselineOptions, "allow_pickle", "--allow-pickle"),
        force: bool = typer.Option(False, "--force", help="Recompute even if inputs and options are unchanged."),
    ) -> None:
        """Verify a checkpoint and record its perplexity, reference generations and top-k logprobs."""
        from quantship.progress import stderr_console
        from quantship.rundir import RunDir
        from quantship.stages import Context, baseline

        options = BaselineOptions(
            eval_source=eval_source, window=window, stride=stride, max_windows=max_windows or None,
            batch_size=batch_size, topk=topk, max_new_tokens=max_new_tokens, dtype=dtype, allow_pickle=allow_pickle,
        )
        root = resolve_run_dir(run_dir, name)
        console = stderr_console()
        outcome = baseline.run(RunDir(root), options, Context(console, force=force), model=model)
        if outcome.status == "kept":
            console.print("baseline: inputs and options unchanged, kept the existing result (--force to redo)")
        typer.echo(f"baseline {outcome.detail}; run dir {root}")
