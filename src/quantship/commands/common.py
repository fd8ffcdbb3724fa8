"""Options and helpers shared by the CLI verbs."""

from __future__ import annotations

from pathlib import Path

import typer

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
