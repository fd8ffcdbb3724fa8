"""`quantship deploy`: Kubernetes manifests for the run, and the capacity answer behind them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from quantship.commands.common import name_option, resolve_run_dir, run_dir_option
from quantship.errors import InputError
from quantship.yamlfile import read_yaml

if TYPE_CHECKING:
    from quantship.deploy.config import DeployConfig


def _config_option() -> Path:
    return typer.Option(
        ..., "--config", "-c", help="Deploy YAML (nodes, traffic, ...) or a pipeline.yaml with a `deploy:` section."
    )


def load_deploy(path: Path) -> DeployConfig:
    """A deploy YAML: the section alone, or a pipeline.yaml with a `deploy:` key."""
    from quantship.deploy.config import parse_deploy
    from quantship.pipeline.config import parse_pipeline

    data = read_yaml(path, "deploy config", "pass --config a YAML file with nodes and traffic (docs/kubernetes.md)")
    if isinstance(data, dict) and "quantize" in data:  # a pipeline.yaml: its loader validates the whole file
        section = parse_pipeline(data, str(path)).deploy
        if section is None:
            raise InputError(f"{path} has no `deploy:` section", "add one (docs/kubernetes.md) or pass a deploy YAML")
        return section
    return parse_deploy(data, str(path))


def register(app: typer.Typer) -> None:
    deploy = typer.Typer(help="Deploy the plan on Kubernetes; size replicas for a traffic target.", no_args_is_help=True)

    @deploy.command("kubernetes")
    def kubernetes(config: Path = _config_option(), run_dir: Path | None = run_dir_option(), name: str = name_option()) -> None:
        """Write <run>/deploy/kubernetes/: model servers, gateway, and the Argo/Flagger gates (kubectl apply -k)."""
        from quantship.deploy import kubernetes as k8s

        cfg = load_deploy(config)
        root = resolve_run_dir(run_dir, name)
        manifests = k8s.build(root, cfg)
        folder = k8s.write(root, cfg, manifests)
        for role, model in manifests.summary["models"].items():
            typer.echo(
                f"{role}: {model['served_model_name']} {model['format']} on {model['stack']}, "
                f"{model['replicas']} replicas x {model['gpus_per_replica']} GPU "
                f"({model['capacity']['per_replica']:g} {model['capacity']['unit']} each, {model['capacity']['source']})"
            )
        typer.echo(f"wrote {folder} (mode {cfg.mode}); apply: kubectl apply -k {folder}")
        for later in manifests.later:
            typer.echo(f"then, once the control is healthy: kubectl apply -f {folder / later} (docs/kubernetes.md)")

    @deploy.command("capacity")
    def capacity(
        config: Path = _config_option(),
        requests_per_s: float | None = typer.Option(None, "--requests-per-s", min=0.001, help="Override the traffic target."),
        streams: int | None = typer.Option(None, "--streams", min=1, help="Concurrent streams instead of requests/s."),
        run_dir: Path | None = run_dir_option(),
        name: str = name_option(),
    ) -> None:
        """Replicas and devices each format needs for the traffic target, on the plan's hardware."""
        from quantship.deploy.capacity import capacity_table
        from quantship.deploy.config import Traffic
        from quantship.deploy.inputs import CONTROL, TREATMENT, bench_requests_per_s, read_run
        from quantship.deploy.sizing import size_model

        cfg = load_deploy(config)
        traffic = cfg.traffic
        if requests_per_s is not None or streams is not None:
            traffic = Traffic(requests_per_s=requests_per_s, concurrent_streams=streams, output_tokens=traffic.output_tokens)
        run = read_run(resolve_run_dir(run_dir, name))
        targets = {CONTROL: run.control, TREATMENT: run.treatment}
        measured = {size_model(run.plan, t, cfg.nodes).format: bench_requests_per_s(run, r) for r, t in targets.items()}
        unit = "device" if run.plan.hardware.kind == "gpu" else "host"
        typer.echo(f"{'format':<12} {'stack':<12} {'per replica':>16} {'source':<15} {'replicas':>8} {unit + 's':>8}")
        for row in capacity_table(run.plan, cfg.nodes, traffic, {f: v for f, v in measured.items() if v}):
            if row.reason:
                typer.echo(f"{row.format:<12} -- {row.reason}")
                continue
            per = f"{row.per_replica:g} {row.unit}"
            typer.echo(f"{row.format:<12} {row.stack:<12} {per:>16} {row.source:<15} {row.replicas:>8} {row.devices:>8}")

    app.add_typer(deploy, name="deploy")
