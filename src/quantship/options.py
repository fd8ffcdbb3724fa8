"""The options of every stage, each defined once.

A field's default, bounds and description are the stage's library default, its
`pipeline.yaml` key and its CLI flag (`commands.common.option` builds the flag from the
field), so the three cannot drift. This module stays light (no torch): the CLI reads
these models at startup to build its flags.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from quantship.bench.models import Api, BenchSettings
from quantship.errors import InputError
from quantship.quantize.spec import VariantSpec

DEFAULT_CONTEXT = 8192
DEFAULT_READY_TIMEOUT_S = 600.0  # a cold vLLM CPU start compiles for minutes
# The built-in offline lm-eval tasks (validate/tasks.py writes their YAML under these names).
BUILTIN_TASKS = ("quantship_cloze", "quantship_next_sentence")


POLICIES = ("smallest-passing",)  # how `validate --select` picks the variant that ships


class Thresholds(BaseModel):
    """The gate's limits: quantship's defaults (docs/validate.md says why); override in YAML or on the command line."""

    model_config = ConfigDict(extra="forbid")
    max_perplexity_delta: float = Field(0.10, ge=0, description="Fail above this relative perplexity increase (variant/baseline - 1).")
    max_kl_mean: float = Field(0.05, ge=0, description="Fail above this mean KL, nats per scored position.")
    max_kl_p99: float = Field(0.75, ge=0, description="Fail above this 99th-percentile KL, nats.")
    min_top1_agreement: float = Field(0.90, ge=0, le=1, description="Fail below this same-top-token rate.")
    max_greedy_regressions: float = Field(
        0.10, ge=0, le=1, description="Fail above this share of references diverging outside the top-k."
    )
    max_probe_drop: float = Field(0.10, ge=0, le=1, description="Fail above this absolute drop of the probe pass rate.")
    max_long_context_delta: float = Field(0.10, ge=0, description="Fail above this relative perplexity increase on long windows.")
    max_task_relative_loss: float = Field(0.05, ge=0, le=1, description="Fail above this per-task 1 - variant acc / baseline acc.")
    # Served engine (`validate --url`) vs in-process figures: how far the server may drift from
    # what the gate measured in-process before the served engine counts as a different model.
    max_served_kl_mean_diff: float = Field(0.02, ge=0, description="|served kl_mean - in-process kl_mean|, nats.")
    max_served_perplexity_diff: float = Field(
        0.02, ge=0, description="|served - in-process| relative perplexity change."
    )
    max_served_top1_diff: float = Field(
        0.05, ge=0, le=1, description="|served - in-process| top-1 agreement (bf16 near-ties flip ~3%)."
    )

    @classmethod
    def load(cls, path: Path | None, overrides: dict[str, Any]) -> Thresholds:
        data: dict[str, Any] = {}
        if path is not None:
            try:
                data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as error:
                raise InputError(f"cannot read thresholds file {path} ({error})", "pass a readable YAML mapping") from None
            if not isinstance(data, dict):
                raise InputError(f"thresholds file {path} is not a mapping", "write `max_perplexity_delta: 0.1` style keys")
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**data)
        except ValidationError as error:
            first = error.errors()[0]
            raise InputError(
                f"invalid threshold {'.'.join(map(str, first['loc']))}: {first['msg']}",
                f"use the keys {', '.join(cls.model_fields)} with non-negative numbers",
            ) from None


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanOptions(_Options):
    """`quantship plan` and the `plan:` section (whose tensor-parallel size serve then uses)."""

    hardware: str = Field(description="h100, h200, a100-80gb, a100-40gb, l4, a10g, b200, cpu, or a profile YAML.")
    context: int | None = Field(
        None, ge=1, description=f"Tokens per sequence (default {DEFAULT_CONTEXT} or the model's maximum)."
    )
    concurrency: int = Field(32, ge=1, description="Concurrent sequences per replica.")
    format: str = Field("auto", description="auto, or bf16, w8a8-fp8, w8a8-int8, w4a16, gguf-q8_0, gguf-q4_k_m, nf4.")
    stack: str = Field("auto", description="auto, vllm, llamacpp or transformers.")
    kv_cache_dtype: str = Field("auto", description="auto (model dtype) or fp8.")
    devices: int = Field(1, ge=1, description="Devices available (GPUs) for tensor parallelism and replicas.")
    max_memory_utilization: float = Field(
        0.90, ge=0.05, le=0.99, description="Share of each device's memory all replicas may use."
    )
    bandwidth_gbs: float | None = Field(None, ge=0.1, description="Memory bandwidth override (CPU default: measured).")
    measurements: Path | None = Field(
        None, description="JSON of measured decode tokens/s per format (e.g. an earlier plan/measurements.json); re-ranks."
    )

    def args(self, model: Path, **more):
        """The planner's request; `more` adds what only the CLI has (a variant, --measure)."""
        from quantship.plan.api import PlanArgs

        return PlanArgs(
            model=model, **self.model_dump(exclude={"context"}), context=self.context or DEFAULT_CONTEXT,
            context_given=self.context is not None, **more,
        )


class BaselineOptions(_Options):
    """How the baseline is measured; variants are later measured the same way."""

    eval_source: str = Field("builtin:evaluation", description="Evaluation text (see docs/data.md).")
    window: int = Field(512, ge=2, description="Tokens per evaluation window.")
    stride: int = Field(512, ge=1, description="Tokens between window starts (< window: overlapping context).")
    max_windows: int | None = Field(32, ge=1, description="Evaluate at most this many windows (CLI 0, YAML null: all).")
    batch_size: int = Field(4, ge=1, description="Windows per forward pass.")
    topk: int = Field(20, ge=1, le=1000, description="Next-token log-probabilities kept per position (for KL later).")
    max_new_tokens: int = Field(48, ge=1, description="Length of greedy reference generations.")
    dtype: str | None = Field(None, description="float32 | bfloat16 | float16 (default: float32 on CPU, bf16 on GPU).")
    device: str | None = Field(None, description="torch device (default: cuda when available, else cpu).")
    allow_pickle: bool = Field(False, description="Accept pickle (.bin) weights; they can run code.")


class CalibrationOptions(_Options):
    source: str = Field("builtin:calibration", description="Calibration text (see docs/data.md).")
    pad_source: str | None = Field(None, description="Second source that fills up when the first is short.")
    samples: int = Field(128, ge=1, description="Number of windows (N).")
    seq_len: int = Field(512, ge=2, description="Tokens per window (L).")
    seed: int = Field(0, description="Seed for document order and window choice.")
    chat: bool = Field(False, description="Format samples with the tokenizer's chat template.")


class QuantizeOptions(_Options):
    """The `quantize:` section: the variants to produce (`quantship quantize` takes the same list)."""

    variants: list[VariantSpec] = Field(min_length=1)
    keep_going: bool = False  # a refused variant is recorded and the others go on

    @model_validator(mode="after")
    def _unique_names(self) -> QuantizeOptions:
        names = [v.name for v in self.variants]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"variant names must be unique; repeated: {', '.join(dupes)}")
        return self


class ValidateOptions(_Options):
    """How a variant is measured; a verdict's fingerprint covers exactly these fields."""

    long_window: int = Field(2048, ge=2, description="Longest window for the long-context slice (capped by the model).")
    long_windows: int = Field(2, ge=1, description="Number of long windows.")
    batch_size: int = Field(4, ge=1, description="Windows per forward pass.")
    tasks: list[str] = Field(
        default_factory=lambda: list(BUILTIN_TASKS),
        description="lm-eval tasks, comma-separated on the CLI (default: the built-in offline ones; CLI 'none', YAML []: skip).",
    )
    task_items: int = Field(100, ge=10, description="Items per built-in offline task.")


class RecoverOptions(_Options):
    """Per-tensor mixed precision for a failing variant (quantship.allocate; docs/validate.md)."""

    target: Literal["gate", "budget"] | None = Field(
        None,
        description="gate: the smallest per-tensor mix that passes this run's gate; budget: the least predicted KL "
        "within --max-bits-per-weight (default: budget when a size is given, else gate).",
    )
    max_bits_per_weight: float | None = Field(
        None, ge=1, description="Size cap, bits per weight over every tensor as the manifest measures it."
    )
    max_gate_runs: int = Field(3, ge=1, description="Gate runs the target correction may take (target gate).")
    sensitivity_tokens: int = Field(
        512, ge=16, description="Calibration tokens per-tensor sensitivity is measured on (never the gate's windows)."
    )
    types: list[str] | None = Field(
        None, description="Candidate tensor types, comma-separated on the CLI (default: every type the backend offers)."
    )

    @model_validator(mode="after")
    def _budget_needs_a_size(self) -> RecoverOptions:
        if self.target == "budget" and self.max_bits_per_weight is None:
            raise ValueError("target budget needs max_bits_per_weight (e.g. 4.9)")
        return self

    @property
    def mode(self) -> str:
        return self.target or ("budget" if self.max_bits_per_weight is not None else "gate")


class ValidateStageOptions(ValidateOptions):
    """Everything `quantship validate` and the `validate:` section take: measuring, gate, recovery, selection."""

    thresholds: Thresholds = Field(default_factory=Thresholds, description="The gate's limits (docs/validate.md).")
    recover: RecoverOptions | None = Field(
        None,
        description="For failing llm-compressor or GGUF variants: choose a type for every tensor from measured "
        "sensitivity, build it, gate it (absent: failing variants stay failed).",
    )
    select: Literal[POLICIES] = Field(  # type: ignore[valid-type]
        "smallest-passing", description="Write validation/selected.json by this policy: smallest-passing."
    )

    def measuring(self) -> ValidateOptions:
        return ValidateOptions(**self.model_dump(include=set(ValidateOptions.model_fields)))


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ServeOptions:
    """A server to start. A dataclass: serve's code copies it with `dataclasses.replace`."""

    stack: str = Field("auto", description="vllm (GPU) | vllm-cpu | llama.cpp | auto (GGUF -> llama.cpp, else vLLM).")
    host: str = Field("127.0.0.1", description="Address to bind (loopback by default).")
    port: int = Field(8000, ge=0, le=65535, description="Port (0: a free one).")
    max_model_len: int = Field(2048, ge=16, description="Context length per sequence.")
    kv_cache_gib: int = Field(1, ge=1, description="vLLM CPU KV cache (VLLM_CPU_KVCACHE_SPACE).")
    tensor_parallel: int = Field(
        1, ge=1, description="vLLM GPUs per replica (not given: plan.json's size when the run has a plan, else 1)."
    )
    gpu_memory_utilization: float = Field(0.90, gt=0, le=1, description="vLLM GPU memory share.")
    threads: int | None = Field(None, ge=1, description="llama.cpp threads (default: physical cores).")
    parallel: int = Field(4, ge=1, description="llama.cpp concurrent slots.")
    enforce_eager: bool = Field(True, description="vLLM CPU: starts in ~25 s instead of ~90 s, same throughput.")
    ready_timeout_s: float = Field(DEFAULT_READY_TIMEOUT_S, ge=1, description="Seconds to wait for the server to become ready.")
    llama_server: Path | None = Field(None, description="Path of a compiled llama-server binary.")
    vllm_python: Path | None = Field(
        None, description="Python of a GPU vLLM install (default: $QUANTSHIP_VLLM_PYTHON or python3)."
    )


class BenchOptions(_Options):
    """The load `quantship bench` and the `bench:` section put on the endpoints."""

    api: Api = Field("chat", description="chat (/v1/chat/completions) or completions (/v1/completions).")
    concurrency: list[PositiveInt] = Field(
        default_factory=lambda: [1, 4], min_length=1, description="Fixed-concurrency sweep, e.g. 1,4,16."
    )
    rate: list[PositiveFloat] | None = Field(
        None, min_length=1, description="Poisson request rates in req/s instead of the concurrency sweep, e.g. 0.5,2."
    )
    max_concurrency: int | None = Field(None, ge=1, description="Cap on requests in flight in rate mode.")
    requests: int = Field(32, ge=1, description="Measured requests per endpoint and level.")
    max_tokens: int = Field(64, ge=1, description="Output tokens per request.")
    ignore_eos: bool = Field(True, description="Generate exactly max_tokens (vLLM, llama.cpp).")
    warmup: int = Field(2, ge=0, description="Unmeasured requests per endpoint before the first level.")
    rounds: int = Field(2, ge=1, description="ABBA rounds per level when comparing two endpoints.")
    slo_ttft_ms: float | None = Field(None, ge=0, description="Goodput target for time to first token.")
    slo_e2e_ms: float | None = Field(None, ge=0, description="Goodput target for end-to-end latency.")
    prompts: str = Field("builtin", description='`builtin` or a JSONL file of {"prompt"} / {"messages"}.')
    seed: int = Field(0, description="Seed of the Poisson arrival times.")
    timeout_s: float = Field(300.0, ge=1, description="Limit per request; slower ones count as errors.")
    server_metrics: bool = Field(True, description="Cross-check against the server's /metrics histograms (vLLM).")

    @model_validator(mode="after")
    def _one_sweep(self) -> BenchOptions:
        if self.rate is not None and "concurrency" in self.model_fields_set:
            raise ValueError("concurrency and rate were both given; sweep one")
        return self

    def settings(self, prompt_count: int) -> BenchSettings:
        """What the run records next to its numbers."""
        return BenchSettings(
            mode="rate" if self.rate is not None else "concurrency",
            levels=[float(v) for v in self.rate or self.concurrency],
            prompt_count=prompt_count,
            **self.model_dump(exclude={"api", "concurrency", "rate", "server_metrics"}),
        )


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ServeSection(ServeOptions):
    """Serve the selected variant and, as the control, the baseline checkpoint."""

    port: Literal[0] = Field(0, description="The run starts two servers, each on a free port.")
    enabled: bool = True
    baseline_stack: str = "auto"  # `stack` is the variant's
    keep_running: bool = False  # leave both servers up after the run (stop: quantship serve --stop)

    def options(self, stack: str, tensor_parallel: int) -> ServeOptions:
        """One server's options: serve's code copies them, to a free port, so they must be plain ServeOptions."""
        values = {f.name: getattr(self, f.name) for f in fields(ServeOptions)}
        return ServeOptions(**{**values, "stack": stack, "tensor_parallel": tensor_parallel})


class BenchSection(BenchOptions):
    """Side by side, baseline vs selected variant, interleaved (ABBA)."""

    enabled: bool = True


class RolloutSection(_Options):
    """A canary gateway in front of both servers: the run writes its rollout.yaml and leaves the servers up."""

    enabled: bool = True
    settings: dict[str, Any] = Field(default_factory=dict)  # rollout.yaml keys (docs/rollout.md) but the three below

    @model_validator(mode="after")
    def _valid_rollout_keys(self) -> RolloutSection:
        from quantship.rollout.config import RolloutConfig

        if taken := sorted({"experiment", "control", "treatment"} & set(self.settings)):
            raise ValueError(f"{', '.join(taken)} come from the run (its name and the two servers); remove them")
        placeholder = {"url": "http://127.0.0.1:1", "model": "m"}
        try:
            RolloutConfig.model_validate({"experiment": "x", "control": placeholder, "treatment": placeholder, **self.settings})
        except ValidationError as error:
            first = error.errors()[0]
            raise ValueError(f"settings.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
        return self
