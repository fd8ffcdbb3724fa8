"""`quantship deploy kubernetes`: the run's plan as manifests plus a kustomization.

Everything is decided and checked first (verdict, hashes, sizing, placement on the
declared nodes, the gateway's config); only then is the folder written, as a run
stage (staging folder renamed into place), so a refusal leaves nothing behind.
Plain YAML + kustomize rather than a Helm chart: every value is already computed from
the run, so there is nothing left to template, and the files can be read and diffed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from quantship.deploy import gateway as gw
from quantship.deploy import progressive, servers
from quantship.deploy.capacity import Capacity, replicas_for
from quantship.deploy.config import DeployConfig
from quantship.deploy.inputs import CONTROL, TREATMENT, RunModels, artifact_hashes, bench_requests_per_s, read_run
from quantship.deploy.sizing import PodSize, check_placement, size_model
from quantship.options import DEFAULT_READY_TIMEOUT_S
from quantship.rundir import RunDir, atomic_write_json, atomic_write_text

STAGE = "deploy/kubernetes"
# Applied by hand once the control version is healthy: the controller then analyses the change.
AFTER = {"argo": "treatment-rollout.yaml", "flagger": "treatment-deployment.yaml"}


@dataclass
class Manifests:
    files: dict[str, list[dict]] = field(default_factory=dict)  # in kustomization order
    later: dict[str, list[dict]] = field(default_factory=dict)  # applied by hand, later
    summary: dict = field(default_factory=dict)

    def objects(self) -> list[dict]:
        return [o for group in (*self.files.values(), *self.later.values()) for o in group]


def build(run_dir: Path, cfg: DeployConfig) -> Manifests:
    """Every object, or an InputError before anything is written."""
    run = read_run(run_dir)
    sizes = {CONTROL: size_model(run.plan, run.control, cfg.nodes), TREATMENT: size_model(run.plan, run.treatment, cfg.nodes)}
    capacity = {role: _capacity(run, role, size, cfg) for role, size in sizes.items()}
    replicas = {TREATMENT: capacity[TREATMENT].replicas, CONTROL: cfg.control_replicas or capacity[CONTROL].replicas}
    check_placement(cfg.nodes, {role: (sizes[role], replicas[role]) for role in sizes})
    models = {role: _server(run, role, sizes[role], replicas[role], _claim_path(run, role, cfg)) for role in sizes}
    control, treatment = models[CONTROL], models[TREATMENT]
    treatment_url = f"http://{treatment.name}-canary:{servers.PORT}/v1" if cfg.mode == "flagger" else treatment.url
    config = gw.rollout_config(_experiment(run_dir), control, treatment, treatment_url, cfg)
    out = Manifests()
    checksums = [servers.checksums_config_map(m, cfg) for m in models.values()]
    if cfg.mode == "argo":
        out.files["models.yaml"] = [*checksums, *progressive.rollout_services(cfg), progressive.rollout(control, config, cfg)]
        out.files["analysis.yaml"] = progressive.analysis_templates(config, cfg)
        out.later[AFTER["argo"]] = [progressive.rollout(treatment, config, cfg)]
    elif cfg.mode == "flagger":
        # Flagger adopts the first version it sees as primary without analysis: that is the
        # control's pods; the treatment's are the change it then analyses. It makes the Services.
        out.files["models.yaml"] = [*checksums, servers.deployment(control, cfg), servers.model_service(control, cfg),
                                    servers.deployment(treatment, cfg, running=control)]
        out.files["canary.yaml"] = [progressive.flagger_canary(treatment, config, cfg, DEFAULT_READY_TIMEOUT_S)]
        out.later[AFTER["flagger"]] = [servers.deployment(treatment, cfg)]
    else:
        out.files["models.yaml"] = [*checksums, servers.deployment(control, cfg), servers.model_service(control, cfg),
                                    servers.deployment(treatment, cfg), servers.model_service(treatment, cfg)]
    out.files["gateway.yaml"] = gw.gateway_objects(config, cfg)
    out.summary = {
        "mode": cfg.mode,
        "namespace": cfg.namespace,
        "models": {role: _describe(models[role], capacity[role]) for role in models},
        "gateway": {"replicas": cfg.gateway.replicas, "store": config.store, "experiment": config.experiment},
    }
    return out


class _Dumper(yaml.SafeDumper):
    """Plain YAML for kubectl and reviewers: no anchors, multi-line strings as literal blocks."""

    def ignore_aliases(self, data) -> bool:
        return True


_Dumper.add_representer(
    str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)
)


def dump(objects: list[dict]) -> str:
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False)


def write(run_dir: Path, cfg: DeployConfig, manifests: Manifests) -> Path:
    """Publish the folder whole (a run stage): YAML files, kustomization.yaml, deploy.json."""
    runs = RunDir(run_dir)
    with runs.stage(STAGE, {"deploy": cfg.model_dump(mode="json")}, {}) as stage:
        for name, objects in {**manifests.files, **manifests.later}.items():
            atomic_write_text(stage.path(name), dump(objects))
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": cfg.namespace,
            "resources": list(manifests.files),
        }
        atomic_write_text(stage.path("kustomization.yaml"), dump([kustomization]))
        atomic_write_json(stage.path("deploy.json"), manifests.summary)
    return runs.stage_dir(STAGE)


def _capacity(run: RunModels, role: str, size: PodSize, cfg: DeployConfig) -> Capacity:
    return replicas_for(cfg.traffic, size.candidate, run.plan, bench_requests_per_s(run, role))


def _server(run: RunModels, role: str, size: PodSize, replicas: int, claim: PurePosixPath) -> servers.ModelServer:
    target = run.control if role == CONTROL else run.treatment
    checksums = servers.artifact_checksums(target, servers.MOUNT / claim, artifact_hashes(run, role))
    return servers.ModelServer(role, target, size, replicas, claim, checksums)


def _claim_path(run: RunModels, role: str, cfg: DeployConfig) -> PurePosixPath:
    """Where the artifact sits in the claim: the control checkpoint at control_path, the run's layout under run_path."""
    if role == CONTROL:
        folder = PurePosixPath(cfg.artifacts.control_path)
        return folder / run.control.path.name if run.control.path.is_file() else folder
    return PurePosixPath(cfg.artifacts.run_path) / run.treatment.path.relative_to(run.root.absolute()).as_posix()


def _experiment(run_dir: Path) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", Path(run_dir).absolute().name) or "quantship"


def _describe(server: servers.ModelServer, capacity: Capacity) -> dict:
    size = server.size
    return {
        "served_model_name": server.target.name,
        "format": size.format,
        "stack": size.stack,
        "replicas": server.replicas,
        "tensor_parallel": size.tensor_parallel,
        "gpus_per_replica": size.devices,
        "memory_bytes_per_replica": size.memory_bytes,
        "budget": size.candidate.fit.budget.model_dump(mode="json"),
        "args": size.settings.args,
        "capacity": {k: v for k, v in capacity.as_dict().items() if k not in ("format", "stack", "reason")},
        "note": size.note,
    }
