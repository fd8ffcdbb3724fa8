"""Options and helpers shared by the CLI verbs."""

from __future__ import annotations

from pathlib import Path

import typer

from quantship.errors import NotAvailable

DEFAULT_RUN_NAME = "default"


def run_dir_option() -> Path | None:
    return typer.Option(
        None,
        "--run-dir",
        help="Run directory shared by all stages (default: runs/<--name>).",
        file_okay=False,
    )


def name_option() -> str:
    return typer.Option(DEFAULT_RUN_NAME, "--name", help="Run name; the run directory is runs/<name>.")


def resolve_run_dir(run_dir: Path | None, name: str) -> Path:
    return run_dir if run_dir is not None else Path("runs") / name


def not_available(app: typer.Typer, verb: str, summary: str, issue: int) -> None:
    """Register a verb that later work fills: it says so and exits 2, no fake output."""

    @app.command(
        verb,
        help=f"{summary} [not available yet]",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def _unavailable() -> None:
        raise NotAvailable(
            f"`quantship {verb}` is not available in this version yet",
            f"it is being built (issue #{issue}); see the README for the stages that work today",
        )
