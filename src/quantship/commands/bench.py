"""`quantship bench`: not built yet (issue #5)."""

import typer

from quantship.commands.common import not_available


def register(app: typer.Typer) -> None:
    not_available(app, "bench", "Measure TTFT, inter-token and end-to-end latency and throughput, side by side.", 5)
