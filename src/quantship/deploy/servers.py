"""A model server as Kubernetes objects: Deployment (or Rollout pod template), Service, checksums.

The container command is the one `quantship serve` builds (`quantship.serve.launch`),
pointed at the artifact's path inside the mounted claim, plus the plan's flags. An init
container checks every file against the sha256 the run recorded before the server
starts; the startup probe is serve's known-answer probe; readiness is `/health`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
from pathlib import Path, PurePosixPath

from quantship.deploy.config import DeployConfig
from quantship.deploy.sizing import PodSize
from quantship.options import DEFAULT_READY_TIMEOUT_S
from quantship.serve import health, launch
from quantship.serve.launch import ServeOptions
from quantship.serve.stacks import STACKS
from quantship.serve.target import ServeTarget

PORT = 8000
MOUNT = PurePosixPath("/models")
CHECKSUMS = "SHA256SUMS"
PROBE_PERIOD_S = 10
# serve's stack -> its image in the config's `images:` and the server program inside that image
IMAGES = {
    "vllm": ("vllm", Path("python3")),
    "vllm-cpu": ("vllm_cpu", Path("python3")),
    "llama.cpp": ("llamacpp", Path("/app/llama-server")),
}
PART_OF = {"app.kubernetes.io/part-of": "quantship"}
SERVER_COMPONENT = {"app.kubernetes.io/component": "model-server"}  # both roles: what a Rollout selects
LOCAL_ONLY_ENV = ("VLLM_CACHE_ROOT", "TMPDIR")  # serve's per-run folders on this machine


@dataclasses.dataclass(frozen=True)
class ModelServer:
    """One role (control or treatment): what it serves, where, and how big each pod is."""

    role: str
    target: ServeTarget
    size: PodSize
    replicas: int
    claim_path: PurePosixPath  # the artifact inside the claim
    checksums: dict[str, str]  # path in the container -> sha256

    @property
    def name(self) -> str:
        return f"model-{self.role}"

    @property
    def labels(self) -> dict[str, str]:
        return {**self.selector, **SERVER_COMPONENT, "quantship.dev/role": self.role, **PART_OF}

    @property
    def selector(self) -> dict[str, str]:
        """Its own name: Flagger names the primary after it, and no other pod carries it."""
        return {"app.kubernetes.io/name": self.name}

    @property
    def url(self) -> str:
        return f"http://{self.name}:{PORT}/v1"


def artifact_checksums(target: ServeTarget, in_container: PurePosixPath, hashes: dict[str, str]) -> dict[str, str]:
    """Path in the container -> sha256, from the artifact's hashes by path relative to its folder."""
    base = in_container if target.path.is_dir() else in_container.parent
    return {str(base / rel): digest for rel, digest in sorted(hashes.items())}


def server_command(server: ModelServer) -> launch.LaunchSpec:
    """serve's command for the stack, on the in-cluster path, with the plan's flags added."""
    size, plan_args = server.size, server.size.settings.args
    in_cluster = dataclasses.replace(server.target.artifact, path=Path(str(MOUNT / server.claim_path)))
    target = dataclasses.replace(server.target, artifact=in_cluster)
    context = int(_flag(plan_args, "--max-model-len") or _ctx_per_slot(plan_args))
    opts = ServeOptions(
        host="0.0.0.0",
        port=PORT,
        max_model_len=context,
        tensor_parallel=max(1, size.tensor_parallel),
        gpu_memory_utilization=float(_flag(plan_args, "--gpu-memory-utilization") or 0.9),
        parallel=int(_flag(plan_args, "--parallel") or 1),
        threads=size.cpus,
        kv_cache_gib=int(size.settings.env.get("VLLM_CPU_KVCACHE_SPACE", 1)),
    )
    spec = STACKS[size.stack].launch_spec(target, IMAGES[size.stack][1], opts, Path("/tmp"))
    argv = list(spec.argv)
    for flag, value in zip(plan_args[::2], plan_args[1::2], strict=True):
        if flag not in argv:
            argv += [flag, value]
    env = {k: v for k, v in {**spec.env, **size.settings.env}.items() if k not in LOCAL_ONLY_ENV}
    return dataclasses.replace(spec, argv=argv, env=env)


def known_answer_command(served_name: str, extra: dict) -> list[str]:
    """serve's probe as an exec startup check: greedy completion of the known prompt, answer expected."""
    body = {"model": served_name, "prompt": health.PROBE_PROMPT, "max_tokens": health.PROBE_MAX_TOKENS, "temperature": 0.0,
            **extra}
    script = (
        f"curl -sf -H 'content-type: application/json' -d {shlex.quote(json.dumps(body))} "
        f"http://127.0.0.1:{PORT}/v1/completions | grep -qi {shlex.quote(health.PROBE_ANSWER)}"
    )
    return ["sh", "-c", script]


def pod_template(server: ModelServer, cfg: DeployConfig) -> dict:
    size = server.size
    launched = server_command(server)
    argv, env = launched.argv, launched.env
    image = getattr(cfg.images, IMAGES[size.stack][0])
    memory = f"{math.ceil(size.memory_bytes / (1 << 20))}Mi"
    resources = {"cpu": str(size.cpus), "memory": memory}
    if size.devices:
        resources[cfg.nodes.gpu_resource] = str(size.devices)
    mounts = [{"name": "artifacts", "mountPath": str(MOUNT), "readOnly": True}]
    volumes = [
        {"name": "artifacts", "persistentVolumeClaim": {"claimName": cfg.artifacts.claim, "readOnly": True}},
        {"name": "checksums", "configMap": {"name": f"{server.name}-checksums"}},
    ]
    if STACKS[size.stack].engine == "vllm":  # vLLM's workers and NCCL exchange tensors through /dev/shm
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    spec = {
        "initContainers": [{
            "name": "verify-sha256",
            "image": cfg.images.verify,
            "command": ["sha256sum", "-c", f"/checksums/{CHECKSUMS}"],
            "volumeMounts": [mounts[0], {"name": "checksums", "mountPath": "/checksums", "readOnly": True}],
        }],
        "containers": [{
            "name": "server",
            "image": image,
            "command": argv[:1],
            "args": argv[1:],
            "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
            "ports": [{"name": "http", "containerPort": PORT}],
            "resources": {"requests": resources, "limits": dict(resources)},
            "startupProbe": {
                "exec": {"command": known_answer_command(server.target.name, launched.greedy_extra)},
                "periodSeconds": PROBE_PERIOD_S,
                "timeoutSeconds": 30,
                "failureThreshold": math.ceil(DEFAULT_READY_TIMEOUT_S / PROBE_PERIOD_S),
            },
            "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": PROBE_PERIOD_S},
            "volumeMounts": mounts,
        }],
        "volumes": volumes,
    }
    if cfg.nodes.node_selector:
        spec["nodeSelector"] = dict(cfg.nodes.node_selector)
    return {"metadata": {"labels": server.labels}, "spec": spec}


def deployment(server: ModelServer, cfg: DeployConfig, running: ModelServer | None = None) -> dict:
    """The Deployment of `server`; `running`: with another model's pods for now (Flagger's first version)."""
    template = pod_template(running or server, cfg)
    template["metadata"]["labels"] = server.labels
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(server.name, cfg, server.labels),
        "spec": {
            "replicas": server.replicas,
            "selector": {"matchLabels": server.selector},
            "template": template,
        },
    }


def service(name: str, selector: dict, cfg: DeployConfig, labels: dict, port: int = PORT, port_name: str = "http") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, cfg, labels),
        "spec": {"selector": selector, "ports": [{"name": port_name, "port": port, "targetPort": port_name}]},
    }


def model_service(server: ModelServer, cfg: DeployConfig) -> dict:
    return service(server.name, server.selector, cfg, server.labels)


def checksums_config_map(server: ModelServer, cfg: DeployConfig) -> dict:
    lines = "".join(f"{digest}  {path}\n" for path, digest in sorted(server.checksums.items()))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(f"{server.name}-checksums", cfg, server.labels),
        "data": {CHECKSUMS: lines},
    }


def _meta(name: str, cfg: DeployConfig, labels: dict) -> dict:
    return {"name": name, "namespace": cfg.namespace, "labels": dict(labels)}


def _flag(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def _ctx_per_slot(args: list[str]) -> int:
    """llama.cpp's --ctx-size is context x slots; serve's options take the context per slot."""
    return int(_flag(args, "--ctx-size")) // int(_flag(args, "--parallel") or 1)
