"""Options and helpers shared by the CLI verbs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def option(model: type, field: str, *flags: str, **settings: Any) -> Any:
    """A typer option whose default, help and bounds come from the options model's field.

    So a flag and its pipeline.yaml key cannot drift apart. Bounds are the field's ge/le
    (typer has no open bounds, so flag fields use ge, not gt). A list default is shown as
    the comma-separated text the flag takes; `settings` adds to or replaces typer's own
    (`help=` where the model has no description; `default=None` only where the verb
    acts only when asked: validate --select).
    """
    info = model.__pydantic_fields__[field]
    default = settings.pop("default") if "default" in settings else (
        ... if info.is_required() else info.get_default(call_default_factory=True)
    )
    if isinstance(default, list):
        default = ",".join(map(str, default))
    bounds = {side: getattr(rule, key) for rule in info.metadata for key, side in (("ge", "min"), ("le", "max"))
              if getattr(rule, key, None) is not None}
    return typer.Option(default, *flags, **{"help": info.description, **bounds, **settings})


def given(ctx: typer.Context) -> set[str]:
    """The parameters typed on the command line: they override a file or a plan, and two of them can clash."""
    # By name: typer vendors its own click, whose ParameterSource is not click's.
    return {name for name in ctx.params if ctx.get_parameter_source(name).name != "DEFAULT"}
