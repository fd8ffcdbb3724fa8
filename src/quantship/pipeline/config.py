"""pipeline.yaml: the whole run as one validated document.

Each section is the options model of the stage it drives (quantship.options; serve's and
bench's add only what the run itself needs: `enabled`, `keep_running`, ...), so a key
means what the stage's CLI flag means, with the same default. Unknown keys and bad values are refused with the dotted
path of the key (`validate.thresholds.max_perplexity_delta`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from quantship.deploy.config import DeployConfig
from quantship.errors import InputError
from quantship.options import (
    BaselineOptions,
    BenchSection,
    CalibrationOptions,
    PlanOptions,
    QuantizeOptions,
    RolloutSection,
    ServeSection,
    ValidateStageOptions,
)
from quantship.yamlfile import read_yaml


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PipelineConfig(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    model: str  # a local checkpoint folder, `demo` (the offline demo model) or hf:ORG/NAME[@REVISION]
    run_dir: Path | None = None  # default: runs/<name>, relative to the current directory
    plan: PlanOptions | None = None
    baseline: BaselineOptions = Field(default_factory=BaselineOptions)
    calibrate: CalibrationOptions = Field(default_factory=CalibrationOptions)
    quantize: QuantizeOptions
    validate_: ValidateStageOptions = Field(default_factory=ValidateStageOptions, alias="validate")
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
