"""The `deploy` section of pipeline.yaml (or its own file): what the cluster has and wants.

The plan says what one replica needs; this says what the cluster offers (nodes, their
GPUs and memory), where the artifacts live inside it (a PersistentVolumeClaim holding
a copy of the run directory), which images run the servers, the traffic to size for,
and who drives the stages. Secrets appear only by name: nothing here holds a token.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from quantship import __version__
from quantship.errors import InputError

MODES = ("gateway", "argo", "flagger")
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Nodes(_Strict):
    """One node pool: a replica never spans nodes, so TP must fit on one of them."""

    count: int = Field(1, ge=1)
    gpus_per_node: int = Field(0, ge=0, description="0: a CPU pool")
    memory_gib: float = Field(gt=0, description="allocatable host memory per node")
    cpus: int = Field(ge=1, description="allocatable cores per node")
    gpu_resource: str = "nvidia.com/gpu"
    node_selector: dict[str, str] = Field(default_factory=dict)


class Traffic(_Strict):
    """The load to size for: sustained requests/s, or concurrent streams, at the plan's context."""

    requests_per_s: float | None = Field(None, gt=0)
    concurrent_streams: int | None = Field(None, ge=1)
    output_tokens: int = Field(256, ge=1, description="per request, to turn tokens/s into requests/s")

    @model_validator(mode="after")
    def _one_target(self) -> Traffic:
        if (self.requests_per_s is None) == (self.concurrent_streams is None):
            raise ValueError("give exactly one of requests_per_s or concurrent_streams")
        return self


class Images(_Strict):
    vllm: str = "vllm/vllm-openai:v0.11.0"
    vllm_cpu: str = "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.11.0"
    llamacpp: str = "ghcr.io/ggml-org/llama.cpp:server"
    gateway: str = f"quantship:{__version__}"  # no published image: build it (docs/kubernetes.md)
    verify: str = "busybox:1.36"
    redis: str = "redis:7.4"


class Artifacts(_Strict):
    """A PersistentVolumeClaim holding the run directory and the control checkpoint."""

    claim: str = Field("quantship-artifacts", pattern=DNS_LABEL)
    run_path: str = "run"  # the run directory inside the claim
    control_path: str = "control"  # the control (full-precision) checkpoint inside the claim


class GatewaySpec(_Strict):
    replicas: int = Field(2, ge=1)
    redis_url: str | None = None  # None: a single-pod Redis is generated (state lost if it restarts)
    admin_token_secret: str = Field("quantship-rollout-admin", pattern=DNS_LABEL)
    admin_token_key: str = "token"
    settings: dict = Field(default_factory=dict)  # rollout.yaml keys (docs/rollout.md)

    @field_validator("redis_url")
    @classmethod
    def _no_password(cls, url: str | None) -> str | None:
        if url is not None and (urlsplit(url).password or urlsplit(url).username):
            raise ValueError("redis_url must not carry credentials: manifests never hold secrets")
        return url


class DeployConfig(_Strict):
    namespace: str = Field("quantship", pattern=DNS_LABEL)
    mode: Literal[MODES] = "gateway"  # type: ignore[valid-type]
    nodes: Nodes
    traffic: Traffic
    images: Images = Field(default_factory=Images)
    artifacts: Artifacts = Field(default_factory=Artifacts)
    gateway: GatewaySpec = Field(default_factory=GatewaySpec)
    control_replicas: int | None = Field(None, ge=1, description="default: as many as the treatment needs")

    @model_validator(mode="after")
    def _gateway_keys(self) -> DeployConfig:
        taken = sorted({"experiment", "control", "treatment", "store", "host", "port"} & set(self.gateway.settings))
        if taken:
            raise ValueError(f"gateway.settings: {', '.join(taken)} come from the deployment; remove them")
        from quantship.rollout.config import RolloutConfig

        backend = {"url": "http://placeholder:1", "model": "m"}
        try:  # the gateway's own model judges its keys, so a refused rollout.yaml is never written
            RolloutConfig.model_validate({**self.gateway.settings, "experiment": "x", "control": backend, "treatment": backend})
        except ValidationError as error:
            first = error.errors()[0]
            raise ValueError(f"gateway.settings.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
        return self


def parse_deploy(data: object, origin: str) -> DeployConfig:
    try:
        return DeployConfig.model_validate(data or {})
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise InputError(f"{origin}: {key}: {first['msg']}", "fix that key; docs/kubernetes.md lists every key") from None
