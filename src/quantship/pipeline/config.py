"""pipeline.yaml: the whole run as one validated document.

Each section is the options model of the stage it drives (quantship.options; quantize's
variants are VariantSpecs), or a subclass adding only what the run itself needs
(`serve.enabled`, `serve.keep_running`, ...), so a key means what the stage's CLI flag
means, with the same default. Unknown keys and bad values are refused with the dotted
path of the key (`validate.thresholds.max_perplexity_delta`).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from quantship.deploy.config import DeployConfig
from quantship.errors import InputError
from quantship.options import (
    BaselineOptions,
    BenchOptions,
    CalibrationOptions,
    PlanOptions,
    ServeOptions,
    ValidateStageOptions,
)
from quantship.quantize.spec import VariantSpec
from quantship.yamlfile import read_yaml

STAGES = ("plan", "baseline", "calibrate", "quantize", "validate", "serve", "bench", "rollout")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuantizeSection(_Section):
    variants: list[VariantSpec] = Field(min_length=1)
    keep_going: bool = False  # a refused variant is recorded and the others go on

    @model_validator(mode="after")
    def _unique_names(self) -> QuantizeSection:
        names = [v.name for v in self.variants]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"variant names must be unique; repeated: {', '.join(dupes)}")
        return self


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
    plan: PlanOptions | None = None
    baseline: BaselineOptions = Field(default_factory=BaselineOptions)
    calibrate: CalibrationOptions = Field(default_factory=CalibrationOptions)
    quantize: QuantizeSection
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
