"""The canary gateway as Kubernetes objects: N replicas sharing state through Redis.

Its rollout.yaml is built and validated by the gateway's own `RolloutConfig`, so a
manifest the gateway would refuse is never written. The admin token reaches the pods
from a Secret the user creates (by name only); `/metrics` is scraped through a
ServiceMonitor and the Grafana dashboard ships as a sidecar-discoverable ConfigMap.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from quantship.deploy.config import DeployConfig
from quantship.deploy.servers import PART_OF, ModelServer, service
from quantship.errors import NotAvailable
from quantship.rollout.config import RolloutConfig

NAME = "quantship-gateway"
PORT = 8080
CONFIG_PATH = "/etc/quantship/rollout.yaml"
TOKEN_ENV = "QUANTSHIP_ROLLOUT_TOKEN"
REDIS = "quantship-redis"
DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "quantship-rollout.json"
LABELS = {"app.kubernetes.io/name": NAME, **PART_OF}
SELECTOR = {"app.kubernetes.io/name": NAME}


def rollout_config(
    experiment: str, control: ModelServer, treatment: ModelServer, treatment_url: str, cfg: DeployConfig
) -> RolloutConfig:
    """The gateway's config; with a rollout controller driving, the gateway never promotes by itself."""
    settings = dict(cfg.gateway.settings)
    if cfg.mode == "argo":  # Argo moves the stages (quantship-advance); Flagger only gates
        settings["auto_promote"] = False
    return RolloutConfig.model_validate({
        **settings,
        "experiment": experiment,
        "control": {"url": control.url, "model": control.target.name},
        "treatment": {"url": treatment_url, "model": treatment.target.name},
        "store": cfg.gateway.redis_url or f"redis://{REDIS}:6379/0",
        "host": "0.0.0.0",
        "port": PORT,
        "admin_token_env": TOKEN_ENV,
    })


def gateway_objects(config: RolloutConfig, cfg: DeployConfig) -> list[dict]:
    meta = {"namespace": cfg.namespace, "labels": dict(LABELS)}
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    objects = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{NAME}-config", **meta},
         "data": {"rollout.yaml": text}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": NAME, **meta},
            "spec": {
                "replicas": cfg.gateway.replicas,
                "selector": {"matchLabels": SELECTOR},
                "template": {"metadata": {"labels": dict(LABELS)}, "spec": {
                    "containers": [{
                        "name": "gateway",
                        "image": cfg.images.gateway,
                        "command": ["quantship", "rollout", "serve", "--config", CONFIG_PATH],
                        "env": [{"name": TOKEN_ENV, "valueFrom": {"secretKeyRef": {
                            "name": cfg.gateway.admin_token_secret, "key": cfg.gateway.admin_token_key}}}],
                        "ports": [{"name": "http", "containerPort": PORT}],
                        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5},
                        "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 20},
                        "resources": {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
                        "volumeMounts": [{"name": "config", "mountPath": str(Path(CONFIG_PATH).parent), "readOnly": True}],
                    }],
                    "volumes": [{"name": "config", "configMap": {"name": f"{NAME}-config"}}],
                }},
            },
        },
        service(NAME, SELECTOR, cfg, LABELS, PORT),
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": NAME, **meta},
            "spec": {"selector": {"matchLabels": SELECTOR},
                     "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}]},
        },
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": f"{NAME}-dashboard", "namespace": cfg.namespace,
                      "labels": {**LABELS, "grafana_dashboard": "1"}},
         "data": {DASHBOARD.name: dashboard_json()}},
    ]
    if cfg.gateway.redis_url is None:
        objects += redis_objects(cfg)
    return objects


def dashboard_json() -> str:
    """The dashboard the repository ships (deploy/grafana); a wheel install does not carry it."""
    try:
        return DASHBOARD.read_text("utf-8")
    except FileNotFoundError:
        raise NotAvailable(
            f"the Grafana dashboard {DASHBOARD} is not part of this installation",
            "run `quantship deploy` from a source checkout (pip install -e .)",
        ) from None


def redis_objects(cfg: DeployConfig) -> list[dict]:
    """One Redis pod for the shared state when none is given (not durable: a restart loses the state)."""
    labels = {"app.kubernetes.io/name": REDIS, **PART_OF}
    selector = {"app.kubernetes.io/name": REDIS}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": REDIS, "namespace": cfg.namespace, "labels": labels},
         "spec": {"replicas": 1, "selector": {"matchLabels": selector}, "template": {
             "metadata": {"labels": labels},
             "spec": {"containers": [{
                 "name": "redis", "image": cfg.images.redis,
                 "ports": [{"name": "redis", "containerPort": 6379}],
                 "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
             }]}}}},
        service(REDIS, selector, cfg, labels, 6379, "redis"),
    ]
