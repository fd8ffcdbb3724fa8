"""`quantship baseline`: not built yet (issue #2)."""

import typer

from quantship.commands.common import not_available


def register(app: typer.Typer) -> None:
    not_available(app, "baseline", "Verify a checkpoint and record its perplexity, reference generations and top-k logprobs.", 2)
