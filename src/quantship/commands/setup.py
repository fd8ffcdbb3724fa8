"""`quantship setup`: build the separate environments serving and GGUF work run in.

The quantizers live in quantship's own environment; llama.cpp (compiled from the
sources vendored in the llama-cpp-python sdist) and vLLM CPU each get their own,
pinned, under $QUANTSHIP_HOME (default ~/.cache/quantship), because their
dependency pins conflict with the quantizers'. Which environments there are comes from
the serving stacks' registry (`quantship.serve.stacks`).
"""

import typer

from quantship.serve.stacks import environments

ENVIRONMENTS = environments()


def register(app: typer.Typer) -> None:
    @app.command("setup")
    def setup(
        environment: str = typer.Argument(..., help=f"One of: {', '.join(ENVIRONMENTS)}, all, status."),
        force: bool = typer.Option(False, "--force", help="Rebuild even if it is already set up."),
    ) -> None:
        """Set up the pinned environments for llama.cpp and vLLM CPU (prints expected time)."""
        from quantship.errors import InputError
        from quantship.progress import stderr_console

        console = stderr_console()
        if environment == "status":
            for name, env in ENVIRONMENTS.items():
                typer.echo(f"{name}: {env.status()}")
            return
        names = list(ENVIRONMENTS) if environment == "all" else [environment]
        for name in names:
            if name not in ENVIRONMENTS:
                raise InputError(f"unknown environment {name!r}", f"use one of: {', '.join(ENVIRONMENTS)}, all, status")
            env = ENVIRONMENTS[name]
            console.print(f"[bold]{name}[/]: {env.SUMMARY}")
            env.setup(console, force=force)
