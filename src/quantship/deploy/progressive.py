"""Argo Rollouts and Flagger resources that gate on the gateway's analysis endpoint.

Argo: `quantship-quality` polls `/rollout/analysis` `breach_checks` times per stage and
fails only when every poll fails (the gateway's N-consecutive-breaches rule);
inconclusive is neither success nor failure, so Argo pauses the Rollout for a human.
`quantship-advance` moves the gateway to the next stage (POST /admin/promote, the
token taken from the Secret by Argo); the Rollout's steps mirror the gateway's stages.

Flagger: a Canary on the treatment Deployment whose `rollout` webhook fails a check on
`fail` and whose `confirm-promotion` webhook holds until `pass`; the gateway splits the
traffic (provider `kubernetes`: Flagger shifts no weights here).
"""

from __future__ import annotations

import math

from quantship.deploy import gateway as gw
from quantship.deploy.config import DeployConfig
from quantship.deploy.servers import SERVER_COMPONENT, ModelServer, pod_template, service
from quantship.rollout.analysis import FAILED, PASSED
from quantship.rollout.config import RolloutConfig

ROLLOUT = "model"
QUALITY, ADVANCE = "quantship-quality", "quantship-advance"
ANALYSIS_PATH = "/rollout/analysis"


def success_condition(config: RolloutConfig) -> str:
    """A pass on enough samples in the window, after as many treatment responses as the gateway asks to promote."""
    n = config.window_min_samples
    return (f'result.verdict == "{PASSED}" && result.samples.treatment >= {n} && result.samples.control >= {n}'
            f" && result.stage_samples >= {config.min_samples}")


def failure_condition() -> str:
    return f'result.verdict == "{FAILED}"'


def gateway_url(cfg: DeployConfig, path: str) -> str:
    return f"http://{gw.NAME}.{cfg.namespace}.svc.cluster.local:{gw.PORT}{path}"


def analysis_templates(config: RolloutConfig, cfg: DeployConfig) -> list[dict]:
    meta = {"namespace": cfg.namespace, "labels": dict(gw.PART_OF)}
    quality = {
        "name": "quality",
        "interval": f"{config.check_interval_s:g}s",
        "count": config.breach_checks,
        "failureLimit": config.breach_checks - 1,
        "successCondition": success_condition(config),
        "failureCondition": failure_condition(),
        "provider": {"web": {"url": gateway_url(cfg, ANALYSIS_PATH), "jsonPath": "{$}", "timeoutSeconds": 10}},
    }
    advance = {
        "name": "advance",
        "count": 1,
        "failureLimit": 0,
        "consecutiveErrorLimit": 0,  # never retry a promotion that may have happened
        "successCondition": 'result.stage_name == "{{args.stage}}"',
        "provider": {"web": {
            "method": "POST",
            "url": gateway_url(cfg, "/admin/promote"),
            "headers": [{"key": "Authorization", "value": "Bearer {{args.admin-token}}"},
                        {"key": "Content-Type", "value": "application/json"}],
            "jsonBody": {"reason": "argo rollouts step"},
            "jsonPath": "{$}",
            "timeoutSeconds": 10,
        }},
    }
    token = {"name": "admin-token", "valueFrom": {"secretKeyRef": {
        "name": cfg.gateway.admin_token_secret, "key": cfg.gateway.admin_token_key}}}
    return [
        {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
         "metadata": {"name": QUALITY, **meta}, "spec": {"metrics": [quality]}},
        {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
         "metadata": {"name": ADVANCE, **meta}, "spec": {"args": [{"name": "stage"}, token], "metrics": [advance]}},
    ]


def canary_steps(config: RolloutConfig) -> list[dict]:
    """Per gateway stage after the initial one: scale the canary, move the gateway, soak, judge."""
    steps = []
    for stage in config.stages[config.initial_stage + 1:]:
        steps += [
            {"setWeight": round(stage.fraction * 100)},
            {"analysis": {"templates": [{"templateName": ADVANCE}], "args": [{"name": "stage", "value": stage.name}]}},
            {"pause": {"duration": f"{config.min_stage_seconds:g}s"}},
            {"analysis": {"templates": [{"templateName": QUALITY}]}},
        ]
    return steps


def rollout(server: ModelServer, config: RolloutConfig, cfg: DeployConfig) -> dict:
    """The Rollout of the model servers with `server`'s pod template: control first, then treatment."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": ROLLOUT, "namespace": cfg.namespace, "labels": dict(gw.PART_OF)},
        "spec": {
            "replicas": server.replicas,
            "selector": {"matchLabels": dict(SERVER_COMPONENT)},
            "template": pod_template(server, cfg),
            "strategy": {"canary": {
                "stableService": "model-control",
                "canaryService": "model-treatment",
                "steps": canary_steps(config),
            }},
        },
    }


def rollout_services(cfg: DeployConfig) -> list[dict]:
    """Stable (control) and canary (treatment) Services; Argo adds the pod-template-hash selector."""
    return [service(name, dict(SERVER_COMPONENT), cfg, dict(gw.PART_OF)) for name in ("model-control", "model-treatment")]


def flagger_canary(treatment: ModelServer, config: RolloutConfig, cfg: DeployConfig, ready_s: float) -> dict:
    stages = len(config.stages) - config.initial_stage - 1
    iterations = max(1, math.ceil(stages * config.min_stage_seconds / config.check_interval_s))
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": treatment.name, "namespace": cfg.namespace, "labels": dict(gw.PART_OF)},
        "spec": {
            "provider": "kubernetes",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": treatment.name},
            "progressDeadlineSeconds": math.ceil(ready_s) + 60,
            "service": {"port": 8000, "targetPort": "http"},
            "analysis": {
                "interval": f"{config.check_interval_s:g}s",
                "threshold": config.breach_checks,
                "iterations": iterations,
                "webhooks": [
                    {"name": "quantship-quality", "type": "rollout", "timeout": "10s",
                     "url": gateway_url(cfg, f"{ANALYSIS_PATH}?gate=not-fail")},
                    {"name": "quantship-verdict", "type": "confirm-promotion", "timeout": "10s",
                     "url": gateway_url(cfg, f"{ANALYSIS_PATH}?gate=pass")},
                ],
            },
        },
    }
