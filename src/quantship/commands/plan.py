"""`quantship plan`: not built yet (issue #5)."""

import typer

from quantship.commands.common import not_available


def register(app: typer.Typer) -> None:
    not_available(app, "plan", "Pick format and serving stack for the hardware; budget memory, replicas, tensor parallelism.", 5)
