"""`quantship serve`: not built yet (issue #5)."""

import typer

from quantship.commands.common import not_available


def register(app: typer.Typer) -> None:
    not_available(app, "serve", "Pre-flight, launch and warm up a vLLM or llama.cpp server for a passing variant.", 5)
