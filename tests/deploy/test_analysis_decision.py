"""The contract a rollout controller relies on, without a cluster.

The manifests are generated from a run; the gateway runs with the generated
rollout.yaml (only the backend URLs and the store changed: cluster names do not
resolve here) in front of stub backends; the test polls the analysis endpoint the
way Argo's web provider and Flagger's webhooks do and judges each answer with the
generated AnalysisTemplate's own conditions and limits.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from quantship.deploy import kubernetes as k8s
from quantship.deploy.config import parse_deploy
from quantship.rollout.config import RolloutConfig
from tests.support.argo import evaluate, measurement_phase, run_phase
from tests.support.deploy_runs import deploy_config
from tests.support.gateway import GatewayServer, chat
from tests.support.openai_stub import OpenAIStub

TOKEN = "decision-test-token"
FAST = {
    "stages": [{"name": "control", "fraction": 0.0}, {"name": "canary", "fraction": 0.5}, {"name": "full", "fraction": 1.0}],
    "window_min_samples": 10,
    "window_seconds": 60,
    "check_interval_s": 0.2,
    "breach_checks": 3,
    "min_stage_seconds": 1,
    "min_samples": 20,
    "models": ["smol"],
}


@pytest.fixture
def generated(gpu_run):
    cfg = parse_deploy(deploy_config(mode="argo", gateway={"settings": FAST}), "test")
    manifests = k8s.build(gpu_run, cfg)
    objects = {(o["kind"], o["metadata"]["name"]): o for o in manifests.objects()}
    rollout_yaml = objects[("ConfigMap", "quantship-gateway-config")]["data"]["rollout.yaml"]
    templates = {name: obj["spec"] for (kind, name), obj in objects.items() if kind == "AnalysisTemplate"}
    return yaml.safe_load(rollout_yaml), templates


def _gateway_config(generated_config: dict, control: OpenAIStub, treatment: OpenAIStub, tmp_path) -> RolloutConfig:
    data = dict(generated_config)
    data["control"] = {**data["control"], "url": control.url}
    data["treatment"] = {**data["treatment"], "url": treatment.url}
    return RolloutConfig.model_validate({**data, "store": f"sqlite:///{tmp_path / 'r.db'}", "host": "127.0.0.1", "port": 0})


def _poll(gateway: GatewayServer, metric: dict) -> tuple[str | None, list[str], list[dict]]:
    """Measure as Argo does (GET the web URL, jsonPath {$}) until the run decides."""
    path = urlsplit(metric["provider"]["web"]["url"]).path
    interval = float(metric["interval"].rstrip("s"))
    phases, answers = [], []
    while (phase := run_phase(metric, phases)) is None:
        answer = httpx.get(f"{gateway.url}{path}", timeout=10).json()
        answers.append(answer)
        phases.append(measurement_phase(metric, answer))
        time.sleep(interval)
    return phase, phases, answers


def _advance(gateway: GatewayServer, advance: dict, stage: str) -> None:
    """quantship-advance as Argo runs it: POST with the Secret's token, judged by its condition."""
    metric = advance["metrics"][0]
    web = metric["provider"]["web"]
    headers = {h["key"]: h["value"].replace("{{args.admin-token}}", TOKEN) for h in web["headers"]}
    answer = httpx.post(f"{gateway.url}{urlsplit(web['url']).path}", headers=headers, json=web["jsonBody"], timeout=10)
    assert answer.status_code == 200, answer.text
    assert evaluate(metric["successCondition"].replace("{{args.stage}}", stage), answer.json())


def _traffic(gateway: GatewayServer, users: int) -> None:
    for i in range(users):
        assert chat(gateway.url, user=f"user-{i}").status_code == 200


def _flagger_gates(gateway: GatewayServer) -> dict[str, int]:
    return {gate: httpx.get(f"{gateway.url}/rollout/analysis", params={"gate": gate}, timeout=10).status_code
            for gate in ("pass", "not-fail")}


@pytest.mark.parametrize("mode", ["normal", "loop"], ids=["good-treatment", "bad-treatment"])
def test_controller_decision(generated, mode, tmp_path, monkeypatch):
    config_data, templates = generated
    quality = templates["quantship-quality"]["metrics"][0]
    monkeypatch.setenv(config_data["admin_token_env"], TOKEN)
    with OpenAIStub(mode="normal", tokens=24, model=config_data["control"]["model"]) as control, \
         OpenAIStub(mode=mode, tokens=24, model=config_data["treatment"]["model"]) as treatment:
        config = _gateway_config(config_data, control, treatment, tmp_path)
        assert config.auto_promote is False  # Argo drives the stages; the gateway only judges (and stays armed)
        with GatewayServer(config) as gateway:
            # No traffic yet, then too few samples: inconclusive, which Argo never counts as success.
            assert _poll(gateway, quality)[0] == "Inconclusive"
            _advance(gateway, templates["quantship-advance"], "canary")
            _traffic(gateway, 8)
            phase, phases, answers = _poll(gateway, quality)
            assert phase == "Inconclusive" and answers[-1]["verdict"] == "inconclusive"
            assert _flagger_gates(gateway) == {"pass": 412, "not-fail": 200}

            _traffic(gateway, 80)
            phase, phases, answers = _poll(gateway, quality)
            last = answers[-1]
            assert min(last["samples"].values()) >= config.window_min_samples
            if mode == "normal":
                assert phase == "Successful" and phases == ["Successful"] * quality["count"]
                # A clean window before the stage has the gateway's min_samples is not yet a success.
                early = {**last, "stage_samples": config.min_samples - 1}
                assert measurement_phase(quality, early) == "Inconclusive"
                assert _flagger_gates(gateway) == {"pass": 200, "not-fail": 200}
            else:
                assert phase == "Failed" and len(phases) <= quality["count"]
                assert "repetition" in last["breached"] or last["status"] == "rolled_back"
                assert _flagger_gates(gateway) == {"pass": 412, "not-fail": 412}


def test_rolled_back_is_a_failure_for_the_controller(generated, tmp_path, monkeypatch):
    """Once the gateway rolled back, no controller may promote, whatever the window says."""
    config_data, templates = generated
    quality = templates["quantship-quality"]["metrics"][0]
    monkeypatch.setenv(config_data["admin_token_env"], TOKEN)
    with OpenAIStub(mode="normal", tokens=24) as control, OpenAIStub(mode="normal", tokens=24) as treatment:
        with GatewayServer(_gateway_config(config_data, control, treatment, tmp_path)) as gateway:
            gateway.admin = lambda action, **body: httpx.post(  # noqa: E731 - the admin API with this test's token
                f"{gateway.url}/admin/{action}", headers={"authorization": f"Bearer {TOKEN}"}, json=body, timeout=10).json()
            gateway.admin("rollback", reason="operator")
            answer = httpx.get(f"{gateway.url}/rollout/analysis", timeout=10).json()
            assert answer["verdict"] == "fail" and measurement_phase(quality, answer) == "Failed"


def test_any_gateway_replica_answers_from_the_shared_window(generated, shared_redis, tmp_path, monkeypatch):
    """As deployed: replicas on one Redis; traffic through one, the controller asks the other."""
    config_data, templates = generated
    monkeypatch.setenv(config_data["admin_token_env"], TOKEN)
    with OpenAIStub(mode="normal", tokens=24) as control, OpenAIStub(mode="normal", tokens=24) as treatment:
        base = _gateway_config(config_data, control, treatment, tmp_path).model_copy(update={"store": shared_redis})
        with GatewayServer(base) as serving, GatewayServer(base) as asked:
            _advance(serving, templates["quantship-advance"], "canary")
            _traffic(serving, 60)
            # The serving replica writes its window once per flush_interval_s: the other sees it within that.
            deadline = time.monotonic() + 2 * base.flush_interval_s + 5
            while True:
                answer = httpx.get(f"{asked.url}/rollout/analysis", timeout=10).json()
                if min(answer["samples"].values()) >= config_data["window_min_samples"] or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert answer["stage_name"] == "canary"
            assert min(answer["samples"].values()) >= config_data["window_min_samples"]
            assert answer["verdict"] == "pass"
