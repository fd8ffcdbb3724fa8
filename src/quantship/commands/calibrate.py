"""`quantship calibrate`: not built yet (issue #2)."""

import typer

from quantship.commands.common import not_available


def register(app: typer.Typer) -> None:
    not_available(app, "calibrate", "Build and validate calibration token windows from a text source.", 2)
