"""`quantship rollout`: not built yet (issue # A/B split, quality monitor, automatic rollback.:6)."""

import typer

from quantship.commands.common import not_available


def register(app: typer.Typer) -> None:
    not_available(app, "rollout", "Run the canary gateway: A/B split, quality monitor, automatic rollback.", 6)
