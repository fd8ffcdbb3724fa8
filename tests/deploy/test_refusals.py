"""Bad input is one line naming the fix, exit 2, and nothing is written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from quantship.deploy import kubernetes as k8s
from quantship.deploy.config import parse_deploy
from quantship.errors import InputError
from quantship.serve import preflight
from quantship.serve.target import from_variant
from tests.support.deploy_runs import NODES, VARIANT, deploy_config, make_run


def _refusal(run, **overrides) -> str:
    cfg = parse_deploy(deploy_config(**overrides), "test")
    with pytest.raises(InputError) as caught:
        k8s.build(run, cfg)
    assert not (run / "deploy").exists()
    return caught.value.one_line()


def test_a_variant_without_a_passing_verdict_is_refused_as_serve_refuses_it(tiny_checkpoint, tmp_path):
    run = make_run(tmp_path / "run", tiny_checkpoint, verdict=False)
    serve_says = preflight.verdict(from_variant(run, VARIANT), force=False)
    assert serve_says.status == "failed"
    assert _refusal(run) == f"pre-flight verdict: {serve_says.detail}; {serve_says.fix}"


def test_weights_that_differ_from_the_manifest_are_refused(gpu_run):
    weights = gpu_run / "variants" / VARIANT / "model.safetensors"
    weights.write_bytes(b"\1" + weights.read_bytes()[1:])
    assert "does not match its manifest" in _refusal(gpu_run)


def test_a_control_checkpoint_edited_since_the_baseline_is_refused(gpu_run):
    from quantship.layout import baseline_checkpoint
    from quantship.rundir import RunDir

    config = baseline_checkpoint(RunDir(gpu_run)) / "config.json"
    config.write_text(config.read_text().replace("}", ', "edited": true}', 1))
    assert "changed since the baseline was measured (config.json)" in _refusal(gpu_run)


def test_a_gpu_plan_on_nodes_without_gpus(gpu_run):
    assert "nodes have none" in _refusal(gpu_run, nodes={**NODES, "gpus_per_node": 0})


def test_a_replica_larger_than_a_node_names_the_shortfall(gpu_run):
    message = _refusal(gpu_run, nodes={**NODES, "memory_gib": 0.5})
    assert "GiB of host memory but a node has 0.5 GiB" in message and "nodes.memory_gib" in message


def test_more_replicas_than_the_nodes_hold(gpu_run):
    cfg = parse_deploy(deploy_config(), "test")
    per_replica = k8s.build(gpu_run, cfg).summary["models"]["treatment"]["capacity"]["per_replica"]
    wanted = per_replica * NODES["gpus_per_node"] * NODES["count"] * 2  # twice what the GPUs hold
    message = _refusal(gpu_run, traffic={"requests_per_s": wanted})
    assert f"but {NODES['count']} are declared" in message and "nodes.count" in message


def test_tensor_parallel_wider_than_a_node(tiny_checkpoint, tmp_path):
    # 600k sequences of 512 tokens: the KV cache alone needs two H100s, so TP 2.
    run = make_run(tmp_path / "run", tiny_checkpoint, concurrency=600_000, devices=2)
    message = _refusal(run, nodes={**NODES, "gpus_per_node": 1}, traffic={"concurrent_streams": 1})
    assert "does not fit the declared nodes" in message and "tensor-parallel size 2" in message


def test_gateway_settings_are_judged_by_the_gateways_own_config():
    with pytest.raises(InputError, match=r"gateway\.settings\.breach_checks"):
        parse_deploy(deploy_config(gateway={"settings": {"breach_checks": 0}}), "test")
    with pytest.raises(InputError, match="come from the deployment"):
        parse_deploy(deploy_config(gateway={"settings": {"store": "sqlite:///x.db"}}), "test")


def test_credentials_in_the_redis_url_are_refused():
    with pytest.raises(InputError, match="must not carry credentials"):
        parse_deploy(deploy_config(gateway={"redis_url": "redis://:hunter2@redis:6379/0"}), "test")


def test_cli_one_line_and_exit_2(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    from quantship.cli import main

    run = make_run(tmp_path / "run", tiny_checkpoint, verdict=False)
    config = tmp_path / "deploy.yaml"
    config.write_text(yaml.safe_dump(deploy_config()))
    monkeypatch.setattr(sys, "argv", ["quantship", "deploy", "kubernetes", "-c", str(config), "--run-dir", str(run)])
    with pytest.raises(SystemExit) as done:
        main()
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and len(err.splitlines()) == 1 and "quantship validate" in err
    assert not (run / "deploy").exists()


def test_the_pipeline_file_carries_the_section(tmp_path):
    from quantship.commands.deploy import load_deploy
    from quantship.pipeline.config import load_pipeline

    pipeline = yaml.safe_load((Path(__file__).parents[2] / "examples" / "demo" / "pipeline.yaml").read_text())
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({**pipeline, "deploy": {**deploy_config(), "mode": "sideways"}}))
    with pytest.raises(InputError, match=r"deploy\.mode"):
        load_pipeline(path)
    path.write_text(yaml.safe_dump({**pipeline, "deploy": deploy_config()}))
    assert load_deploy(path) == load_pipeline(path).deploy
