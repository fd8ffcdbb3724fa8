"""`quantship run`: not built yet (issue #7)."""

import typer

from quantship.commands.common import not_available


def register(app: typer.Typer) -> None:
    not_available(app, "run", "Run the whole pipeline from one pipeline.yaml, resumably.", 7)
