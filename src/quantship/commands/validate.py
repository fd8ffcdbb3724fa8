"""`quantship validate`: not built yet (issue #4)."""

import typer

from quantship.commands.common import not_available


def register(app: typer.Typer) -> None:
    not_available(app, "validate", "Gate variants on measured quality against the baseline; write the report.", 4)
