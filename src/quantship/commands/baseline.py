"""`quantship baseline`: verify a checkpoint and record its reference measurements."""

from pathlib import Path

import typer

from quantship.commands.common import name_option, resolve_run_dir, run_dir_option


def register(app: typer.Typer) -> None:
    @app.command("baseline")
    def baseline(
        model: Path = typer.Option(..., "--model", help="Local Hugging Face checkpoint folder."),
        run_dir: Path = run_dir_option(),
        name: str = name_option(),
        eval_source: str = typer.Option("builtin:evaluation", "--eval-source", help="Evaluation text (see docs/data.md)."),
        window: int = typer.Option(512, "--window", help="Tokens per evaluation window."),
        stride: int = typer.Option(512, "--stride", help="Tokens between window starts (< window: overlapping context)."),
        max_windows: int = typer.Option(32, "--max-windows", help="Evaluate at most this many windows (0: all)."),
        batch_size: int = typer.Option(4, "--batch-size", help="Windows per forward pass."),
        topk: int = typer.Option(20, "--topk", help="Next-token log-probabilities kept per position (for KL later)."),
        max_new_tokens: int = typer.Option(48, "--max-new-tokens", help="Length of greedy reference generations."),
        dtype: str = typer.Option(None, "--dtype", help="float32 | bfloat16 | float16 (default: float32 on CPU, bf16 on GPU)."),
        allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Accept pickle (.bin) weights; they can run code."),
        force: bool = typer.Option(False, "--force", help="Recompute even if inputs and options are unchanged."),
    ) -> None:
        """Verify a checkpoint and record its perplexity, reference generations and top-k logprobs."""
        from quantship.progress import stderr_console
        from quantship.rundir import RunDir
        from quantship.stages.baseline import BaselineOptions, run_baseline

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
