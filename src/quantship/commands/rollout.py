"""`quantship rollout`: run the canary gateway and drive it (status, promote, pause, resume, rollback)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

ADMIN_URL = "http://127.0.0.1:8080"


def _url() -> str:
    return typer.Option(ADMIN_URL, "--url", help="Gateway base URL.")


def _token() -> str | None:
    return typer.Option(None, "--token", help="Admin bearer token (default: $QUANTSHIP_ROLLOUT_TOKEN).", show_default=False)


def register(app: typer.Typer) -> None:
    rollout = typer.Typer(
        help="Run the canary gateway: A/B split, quality monitor, automatic rollback.", no_args_is_help=True
    )

    @rollout.command("serve")
    def serve(
        config: Path = typer.Option(..., "--config", "-c", help="Rollout YAML (see docs/rollout.md)."),
        host: str | None = typer.Option(None, "--host", help="Override the config's bind host."),
        port: int | None = typer.Option(None, "--port", help="Override the config's port."),
    ) -> None:
        """Serve the gateway until interrupted; state survives restarts in the configured store."""
        import uvicorn

        from quantship.rollout.config import load_config
        from quantship.rollout.gateway import SERVER, build_app

        cfg = load_config(config)
        if host:
            cfg.host = host
        if port is not None:
            cfg.port = port
        if cfg.admin_token() is None:
            typer.secho(f"warning: ${cfg.admin_token_env} is not set: the admin API is disabled", err=True, fg="yellow")
        typer.echo(f"rollout gateway for experiment {cfg.experiment!r} on http://{cfg.host}:{cfg.port}", err=True)
        uvicorn.run(
            build_app(cfg), host=cfg.host, port=cfg.port, log_level="warning", timeout_graceful_shutdown=5,
            **SERVER,
            timeout_keep_alive=int(cfg.timeouts.client_keep_alive_s),
        )

    def _admin(action: str, help_text: str, reason: bool) -> None:
        from quantship.rollout.admin import call

        if reason:
            def command(url: str = _url(), token: str | None = _token(),
                        why: str = typer.Option("", "--reason", help="Recorded in the audit log.")) -> None:
                typer.echo(json.dumps(call(url, action, token, why), indent=2))
        else:
            def command(url: str = _url(), token: str | None = _token()) -> None:
                typer.echo(json.dumps(call(url, action, token), indent=2))

        command.__doc__ = help_text
        rollout.command(action)(command)

    _admin("status", "Print the stage, traffic split, counters and the latest check.", False)
    _admin("audit", "Print the audit log (promotions, pauses, rollbacks with reasons).", False)
    _admin("promote", "Move to the next stage now.", True)
    _admin("pause", "Hold the current stage: no automatic promotion (rollback still armed).", False)
    _admin("resume", "Resume automatic promotion.", False)
    _admin("rollback", "Send all traffic to the control now.", True)

    app.add_typer(rollout, name="rollout")
