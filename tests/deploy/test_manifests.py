"""The generated manifests: valid against the published schemas, and consistent with the run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from quantship.deploy import kubernetes as k8s
from quantship.deploy import servers
from quantship.deploy.config import parse_deploy
from quantship.plan.planner import Plan
from quantship.rollout.config import load_config
from quantship.rundir import read_json
from quantship.serve import health
from tests.support.deploy_runs import VARIANT, deploy_config
from tests.support.k8s_schemas import core_errors, errors_of
from tests.support.requires import requires

MODES = ("gateway", "argo", "flagger")


def _write(run: Path, mode: str, **overrides) -> tuple[Path, dict]:
    cfg = parse_deploy(deploy_config(mode=mode, **overrides), "test")
    folder = k8s.write(run, cfg, k8s.build(run, cfg))
    objects = {}
    for file in folder.glob("*.yaml"):
        for obj in yaml.safe_load_all(file.read_text()):
            objects[(obj["kind"], obj.get("metadata", {}).get("name", file.name))] = obj
    return folder, objects


@pytest.mark.parametrize("mode", MODES)
def test_every_object_passes_its_published_schema(gpu_run, mode):
    folder, objects = _write(gpu_run, mode)
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert all((folder / name).is_file() for name in kustomization["resources"])
    resources = [o for o in objects.values() if o["kind"] != "Kustomization"]
    assert errors_of(resources) == {}
    expected = {"gateway": {"Deployment", "Service", "ConfigMap", "ServiceMonitor"},
                "argo": {"Rollout", "AnalysisTemplate", "ServiceMonitor"}, "flagger": {"Canary", "ServiceMonitor"}}[mode]
    assert expected <= {kind for kind, _ in objects}


def test_the_validators_reject_a_broken_object(gpu_run):
    """Guard against a validator that accepts anything: each one must refuse a wrong field."""
    _, objects = _write(gpu_run, "argo")
    broken = {key: yaml.safe_load(yaml.safe_dump(obj)) for key, obj in objects.items()}
    broken[("Deployment", "quantship-gateway")]["spec"]["replicas"] = "two"
    broken[("Rollout", "model")]["spec"]["strategy"]["canary"]["steps"][0]["setWeight"] = "ten"
    broken[("ServiceMonitor", "quantship-gateway")]["spec"]["endpoints"] = "metrics"
    assert core_errors(broken[("Deployment", "quantship-gateway")])
    keys = [("Rollout", "model"), ("ServiceMonitor", "quantship-gateway")]
    assert set(errors_of([broken[k] for k in keys])) == {"Rollout/model", "ServiceMonitor/quantship-gateway"}
    _, flagger = _write(gpu_run, "flagger")
    canary = flagger[("Canary", "model-treatment")]
    canary["spec"]["analysis"]["threshold"] = "three"
    assert errors_of([canary])


def test_servers_are_sized_and_launched_as_the_plan_and_serve_say(gpu_run):
    _, objects = _write(gpu_run, "gateway")
    plan = Plan.model_validate(read_json(gpu_run / "plan" / "plan.json"))
    summary = read_json(gpu_run / "deploy" / "kubernetes" / "deploy.json")["models"]
    for role in ("control", "treatment"):
        pod = objects[("Deployment", f"model-{role}")]["spec"]["template"]["spec"]
        server = pod["containers"][0]
        args = server["args"]

        def flag(name: str, args: list[str] = args) -> str:
            return args[args.index(name) + 1]

        assert flag("--max-model-len") == str(plan.traffic.context)
        assert flag("--max-num-seqs") == str(plan.traffic.concurrency)
        assert flag("--served-model-name") == summary[role]["served_model_name"]
        assert flag("--tensor-parallel-size") == str(summary[role]["tensor_parallel"])
        limits = server["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == str(summary[role]["tensor_parallel"])
        assert int(limits["memory"].removesuffix("Mi")) << 20 >= summary[role]["memory_bytes_per_replica"]
        assert server["readinessProbe"]["httpGet"]["path"] == "/health"
        probe = " ".join(server["startupProbe"]["exec"]["command"])
        assert health.PROBE_PROMPT in probe and health.PROBE_ANSWER in probe
        assert all(m["readOnly"] for m in server["volumeMounts"] if m["name"] == "artifacts")
        assert pod["initContainers"][0]["command"][:2] == ["sha256sum", "-c"]
        assert objects[("Deployment", f"model-{role}")]["spec"]["replicas"] == summary[role]["capacity"]["replicas"]
    treatment_args = objects[("Deployment", "model-treatment")]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert treatment_args[treatment_args.index("--quantization") + 1] == "compressed-tensors"
    assert "--quantization" not in objects[("Deployment", "model-control")]["spec"]["template"]["spec"]["containers"][0]["args"]


def test_gateway_config_is_one_the_gateway_loads_and_points_at_the_services(gpu_run, tmp_path):
    _, objects = _write(gpu_run, "gateway")
    path = tmp_path / "rollout.yaml"
    path.write_text(objects[("ConfigMap", "quantship-gateway-config")]["data"]["rollout.yaml"])
    config = load_config(path)
    for role, backend in (("control", config.control), ("treatment", config.treatment)):
        service = objects[("Service", f"model-{role}")]
        assert backend.url == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
        args = objects[("Deployment", f"model-{role}")]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert backend.model == args[args.index("--served-model-name") + 1]
    assert config.store.startswith("redis://") and objects[("Deployment", "quantship-gateway")]["spec"]["replicas"] == 2
    assert ("Service", "quantship-redis") in objects


def test_argo_steps_mirror_the_gateway_stages(gpu_run):
    stages = [{"name": "control", "fraction": 0.0}, {"name": "canary", "fraction": 0.1}, {"name": "full", "fraction": 1.0}]
    _, objects = _write(gpu_run, "argo", gateway={"settings": {"stages": stages}})
    steps = objects[("Rollout", "model")]["spec"]["strategy"]["canary"]["steps"]
    assert [s["setWeight"] for s in steps if "setWeight" in s] == [10, 100]
    advanced = [s["analysis"]["args"][0]["value"] for s in steps if "analysis" in s and "args" in s["analysis"]]
    assert advanced == ["canary", "full"]
    config = yaml.safe_load(objects[("ConfigMap", "quantship-gateway-config")]["data"]["rollout.yaml"])
    assert config["auto_promote"] is False


def test_no_secret_is_written(gpu_run, monkeypatch):
    token = "s3cret-admin-token-value"
    monkeypatch.setenv("QUANTSHIP_ROLLOUT_TOKEN", token)
    for mode in MODES:
        folder, objects = _write(gpu_run, mode)
        assert all(token not in f.read_text() for f in folder.iterdir())
        assert "Secret" not in {kind for kind, _ in objects}
        env = objects[("Deployment", "quantship-gateway")]["spec"]["template"]["spec"]["containers"][0]["env"]
        assert env == [{"name": "QUANTSHIP_ROLLOUT_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": "quantship-rollout-admin", "key": "token"}}}]


@requires("sha256sum")
def test_init_step_verifies_the_artifacts_laid_out_as_documented(gpu_run, tmp_path):
    """Copy the run and checkpoint into a 'claim' as docs/kubernetes.md says; run the init command on it."""
    _, objects = _write(gpu_run, "gateway")
    claim = tmp_path / "claim"
    shutil.copytree(gpu_run, claim / "run")
    checkpoint = Path(read_json(gpu_run / "baseline" / "baseline.json")["checkpoint"]["path"])
    shutil.copytree(checkpoint, claim / "control")
    for role in ("control", "treatment"):
        sums = objects[("ConfigMap", f"model-{role}-checksums")]["data"]["SHA256SUMS"].replace("/models/", f"{claim}/")
        (tmp_path / role).write_text(sums)
        assert subprocess.run(["sha256sum", "-c", str(tmp_path / role)], capture_output=True).returncode == 0
    weights = claim / "run" / "variants" / VARIANT / "model.safetensors"
    weights.write_bytes(b"\1" + weights.read_bytes()[1:])
    assert subprocess.run(["sha256sum", "-c", str(tmp_path / "treatment")], capture_output=True).returncode != 0


@pytest.mark.parametrize("mode, later, kind", [("argo", "treatment-rollout.yaml", "Rollout"),
                                               ("flagger", "treatment-deployment.yaml", "Deployment")])
def test_the_controller_first_sees_the_control_then_the_treatment(gpu_run, mode, later, kind):
    """Argo and Flagger adopt the first version unanalysed: it must be the control's; the change is the treatment."""
    folder, _ = _write(gpu_run, mode)
    first = [o for f in yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]
             for o in yaml.safe_load_all((folder / f).read_text()) if o["kind"] == kind]
    name = "model" if mode == "argo" else "model-treatment"
    initial = next(o for o in first if o["metadata"]["name"] == name)
    changed = next(yaml.safe_load_all((folder / later).read_text()))
    assert later not in yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]

    def served(obj: dict) -> str:
        args = obj["spec"]["template"]["spec"]["containers"][0]["args"]
        return args[args.index("--served-model-name") + 1]

    summary = read_json(folder / "deploy.json")["models"]
    assert served(initial) == summary["control"]["served_model_name"]
    assert served(changed) == summary["treatment"]["served_model_name"]
    assert initial["spec"]["selector"] == changed["spec"]["selector"]


@requires("curl")
@pytest.mark.parametrize("mode, passes", [("normal", True), ("refuse", False)])
def test_startup_probe_command_runs_serves_probe(gpu_run, mode, passes):
    """The exec probe, run by sh against an OpenAI server that knows (or not) the answer."""
    from tests.support.openai_stub import OpenAIStub

    _, objects = _write(gpu_run, "gateway")
    command = objects[("Deployment", "model-treatment")]["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    argv = command["exec"]["command"]
    with OpenAIStub(mode=mode, tokens=16) as stub:
        local = [part.replace(f"http://127.0.0.1:{servers.PORT}", stub.url) for part in argv]
        assert (subprocess.run(local, capture_output=True, timeout=30).returncode == 0) is passes
