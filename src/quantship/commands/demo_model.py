"""`quantship demo-model`: not built yet (issue #2)."""

import typer

from quantship.commands.common import not_available


def register(app: typer.Typer) -> None:
    not_available(app, "demo-model", "Materialise the offline demo model (SmolLM2-135M-Instruct) as a Hugging Face checkpoint.", 2)
