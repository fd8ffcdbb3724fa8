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
        from quantship.evaluate.baseline import run_baseline
        from quantship.progress import stderr_console
        from quantship.rundir import RunDir

        options = BaselineOptions(
            eval_source=eval_source, window=window, stride=stride, max_windows=max_windows or None,
            batch_size=batch_size, topk=topk, max_new_tokens=max_new_tokens, dtype=dtype, allow_pickle=allow_pickle,
        )
        root = resolve_run_dir(run_dir, name)
        console = stderr_console()
        result, skipped = run_baseline(model, RunDir(root), options, console, force=force)
        ppl = result["perplexity"]
        if skipped:
            console.print("baseline: inputs and options unchanged, kept the existing result (--force to redo)")
        typer.echo(
            f"baseline perplexity {ppl['value']:.3f} on {ppl['tokens_scored']:,} tokens of "
            f"{result['eval']['source']} ({ppl['tokens_per_s']:,.0f} tok/s); "
            f"probes {result['probes']['passed']}/{result['probes']['total']}; run dir {root}"
        )
