"""The demo run's shape: a CPU plan, the bf16 control on vLLM CPU, a GGUF Q4_1 variant on llama.cpp,
deployed with the `deploy:` section of examples/demo/pipeline.yaml, in every mode."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from quantship.commands.deploy import load_deploy
from quantship.deploy import kubernetes as k8s
from quantship.plan.api import PlanArgs, plan_from_args, write_plan
from quantship.rundir import RunDir, atomic_write_json
from tests.support.deploy_runs import baseline_inputs
from tests.support.k8s_schemas import errors_of
from tests.support.serve_files import write_gguf

PIPELINE = Path(__file__).resolve().parents[2] / "examples" / "demo" / "pipeline.yaml"


@pytest.fixture
def demo_like_run(tiny_checkpoint, tmp_path) -> Path:
    root = tmp_path / "runs" / "demo"
    runs = RunDir(root)
    with runs.stage("baseline", {}, baseline_inputs(runs, tiny_checkpoint)) as stage:
        atomic_write_json(stage.path("baseline.json"), {"checkpoint": {"path": str(tiny_checkpoint)}})
    args = PlanArgs(model=tiny_checkpoint, hardware="cpu", context=512, concurrency=4, bandwidth_gbs=20.0)
    write_plan(runs, args, plan_from_args(args))
    with runs.stage("variants/q4_1", {"scheme": "Q4_1"}, {}) as stage:
        write_gguf(stage.path("q4_1.Q4_1.gguf"), "Q4_1", rows=32)
    (root / "validation").mkdir()
    verdict = {"passed": True, "variant_fingerprint": runs.manifest("variants/q4_1")["fingerprint"]}
    (root / "validation" / "q4_1.json").write_text(json.dumps(verdict))
    selection = {"selected": "q4_1", "variant_fingerprint": verdict["variant_fingerprint"]}
    (root / "validation" / "selected.json").write_text(json.dumps(selection))
    return root


@pytest.mark.parametrize("mode", ["gateway", "argo", "flagger"])
def test_demo_section_deploys_the_demo_run(demo_like_run, mode):
    cfg = load_deploy(PIPELINE).model_copy(update={"mode": mode})
    folder = k8s.write(demo_like_run, cfg, k8s.build(demo_like_run, cfg))
    objects = [o for f in folder.glob("*.yaml") if f.name != "kustomization.yaml" for o in yaml.safe_load_all(f.read_text())]
    assert errors_of(objects) == {}
    models = json.loads((folder / "deploy.json").read_text())["models"]
    assert (models["control"]["stack"], models["treatment"]["stack"]) == ("vllm-cpu", "llama.cpp")
    assert "Q4_1 is not a plan format" in models["treatment"]["note"]
    servers = [o for o in objects if o["kind"] in ("Deployment", "Rollout")]
    llama = next(o for o in servers if "--alias" in o["spec"]["template"]["spec"]["containers"][0].get("args", []))
    container = llama["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert container["command"] == ["/app/llama-server"] and "nvidia.com/gpu" not in container["resources"]["limits"]
    assert args[args.index("--model") + 1] == "/models/run/variants/q4_1/q4_1.Q4_1.gguf"
    assert args[args.index("--n-gpu-layers") + 1] == "0"
    assert int(args[args.index("--ctx-size") + 1]) == 512 * 4


def test_the_documented_command_on_the_demo_run(demo_like_run, monkeypatch, capsys):
    from quantship.cli import main

    argv = ["quantship", "deploy", "kubernetes", "-c", str(PIPELINE), "--run-dir", str(demo_like_run)]
    monkeypatch.setattr(sys, "argv", argv)
    main()
    out = capsys.readouterr().out
    folder = demo_like_run / "deploy" / "kubernetes"
    assert f"kubectl apply -k {folder}" in out and (folder / "kustomization.yaml").is_file()
    assert "treatment: q4_1 gguf-q4_1 on llama.cpp" in out and "then, once" not in out  # gateway mode: one step


def test_cpu_pods_hold_what_their_server_allocates(demo_like_run):
    """vLLM CPU takes VLLM_CPU_KVCACHE_SPACE whole GiB: the memory limit must cover it, not the budget's bytes."""
    cfg = load_deploy(PIPELINE)
    manifests = k8s.build(demo_like_run, cfg)
    control = next(o for o in manifests.objects() if o["metadata"]["name"] == "model-control" and o["kind"] == "Deployment")
    container = control["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    budget = manifests.summary["models"]["control"]["budget"]
    limit = int(container["resources"]["limits"]["memory"].removesuffix("Mi")) << 20
    assert limit >= budget["weights_bytes"] + int(env["VLLM_CPU_KVCACHE_SPACE"]) * (1 << 30) + budget["overhead_bytes"]
