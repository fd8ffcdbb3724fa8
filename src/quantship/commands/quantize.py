"""`quantship quantize`: not built yet (issue #3)."""

import typer

from quantship.commands.common import not_available


def register(app: typer.Typer) -> None:
    not_available(app, "quantize", "Quantize the baseline checkpoint into variants (GPTQ, AWQ, RTN, FP8, INT8, GGUF, NF4).", 3)
