"""The `quantship` command: one thin verb per pipeline stage.

Each verb lives in `quantship.commands.<module>` and registers itself here; the
verbs parse options, call the library and print. Any `QuantshipError` becomes one
line on stderr and its exit code (2 for bad input, 1 for a failed gate).
"""

from __future__ import annotations

import importlib
import sys

import typer

from quantship import __version__
from quantship.errors import QuantshipError

# Order is the order of `--help`: the pipeline from start to end.
COMMAND_MODULES = (
    "setup",
    "demo_model",
    "plan",
    "baseline",
    "calibrate",
    "quantize",
    "validate",
    "serve",
    "bench",
    "rollout",
    "deploy",
    "run",
)

app = typer.Typer(
    name="quantship",
    help=(
        "Quantize an LLM, gate it on measured quality, serve it, benchmark it, "
        "roll it out behind a canary and roll it back."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"quantship {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """quantship: from a full-precision checkpoint to a watched, reversible rollout."""


for _module in COMMAND_MODULES:
    importlib.import_module(f"quantship.commands.{_module}").register(app)


def main() -> None:
    try:
        app(standalone_mode=False)
    except QuantshipError as error:
        typer.secho(f"error: {error.one_line()}", err=True, fg="red")
        sys.exit(error.exit_code)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        typer.secho("aborted", err=True, fg="red")
        sys.exit(130)
    except KeyboardInterrupt:
        typer.secho("interrupted: no partial output was kept", err=True, fg="red")
        sys.exit(130)
    except Exception as error:  # click usage errors carry their own exit code
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise


if __name__ == "__main__":
    main()
