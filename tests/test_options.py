"""One options model per stage: every CLI flag and every pipeline.yaml key is one field of it.

Fails when a flag is added without a field (or a CLI-only entry below), when a flag's
default or help is written by hand instead of read from the model, when an example's key
is not a field, and when a pipeline section stops being the stage's options model.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path

import pytest
import typer

from quantship.cli import app
from quantship.options import (
    BaselineOptions,
    BenchOptions,
    BenchSection,
    CalibrationOptions,
    PlanOptions,
    RecoverOptions,
    ServeOptions,
    ServeSection,
    Thresholds,
    ValidateOptions,
    ValidateStageOptions,
)
from quantship.pipeline.config import PipelineConfig
from quantship.plan.measure import MeasureSettings
from quantship.yamlfile import read_yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = [*sorted((ROOT / "examples").glob("*.yaml")), ROOT / "examples" / "demo" / "pipeline.yaml"]

# Each stage verb's options models: a flag maps to the field of its parameter's name.
STAGE_MODELS = {
    "plan": (PlanOptions,),
    "baseline": (BaselineOptions,),
    "calibrate": (CalibrationOptions,),
    "validate": (ValidateStageOptions, Thresholds, RecoverOptions),
    "serve": (ServeOptions,),
    "bench": (BenchOptions,),
}
# Flags whose parameter is named apart from its field.
RENAMED = {
    ("plan", "measure_concurrency"): (MeasureSettings, "concurrency"),
    ("plan", "measure_tokens"): (MeasureSettings, "max_tokens"),
    ("plan", "measure_requests"): (MeasureSettings, "requests"),
}
# Flags with no pipeline.yaml key, and why.
RUN_DIR = {"run_dir": "the pipeline's run_dir:", "name": "the pipeline's name:"}
CLI_ONLY = {
    "plan": {**RUN_DIR, "model": "the pipeline's model:", "variant": "the pipeline plans before it quantizes",
             "measure": "serves variants, which the pipeline has not made at plan time"},
    "baseline": {**RUN_DIR, "model": "the pipeline's model:", "force": "quantship run --force"},
    "calibrate": {**RUN_DIR, "model": "the pipeline's baseline checkpoint", "force": "quantship run --force"},
    "validate": {**RUN_DIR, "variant": "the pipeline validates every quantize variant",
                 "thresholds_file": "the pipeline writes validate.thresholds inline", "force": "quantship run --force",
                 "url": "a running server; the pipeline serves after validating",
                 "served_model": "goes with --url"},
    "serve": {**RUN_DIR, "variant": "the pipeline serves the selected variant", "model": "the pipeline's baseline",
              "force": "the pipeline serves only a passing variant", "dry_run": "prints a command",
              "detach": "serve.keep_running", "stop": "an action", "setup": "quantship setup"},
    "bench": {**RUN_DIR, **{name: "the pipeline benches the servers it started" for name in (
        "url", "model", "label", "compare_url", "compare_model", "compare_label", "metrics_url", "compare_metrics_url")},
        "tag": "the pipeline writes bench/pipeline"},
}
# The one flag whose default differs from its key's on purpose: the verb selects only when asked.
CLI_DEFAULT = {("validate", "select"): None}
# Pipeline sections that subclass a stage model, and the keys they add (or redefine) for the run itself.
SECTIONS = {"plan": PlanOptions, "baseline": BaselineOptions, "calibrate": CalibrationOptions,
            "validate": ValidateStageOptions, "serve": ServeOptions, "bench": BenchOptions}
PIPELINE_ONLY = {"serve": {"enabled", "baseline_stack", "keep_running", "port"}, "bench": {"enabled"}}


def _fields(model: type) -> dict:
    return model.__pydantic_fields__


def _commands():
    group = typer.main.get_command(app)
    return {stage: group.commands[stage] for stage in STAGE_MODELS}


def _field(stage: str, name: str):
    if (stage, name) in RENAMED:
        return [RENAMED[stage, name]]
    return [(model, name) for model in STAGE_MODELS[stage] if name in _fields(model)]


def _models(annotation) -> list[type]:
    """The options models inside a field's annotation (`X | None`, `list[X]`)."""
    if hasattr(annotation, "__pydantic_fields__"):
        return [annotation]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) in (typing.Union, list):
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    return []


@pytest.mark.parametrize("stage", STAGE_MODELS)
def test_every_flag_is_one_field_or_cli_only(stage):
    params = {p.name: p for p in _commands()[stage].params}
    assert set(CLI_ONLY[stage]) <= set(params), "a CLI-only entry names no flag"
    for name in set(params) - set(CLI_ONLY[stage]):
        assert len(_field(stage, name)) == 1, f"{stage} {params[name].opts}: fields {_field(stage, name)}"


@pytest.mark.parametrize("stage", STAGE_MODELS)
def test_flag_defaults_and_help_are_the_fields(stage):
    for param in _commands()[stage].params:
        if param.name in CLI_ONLY[stage]:
            continue
        [(model, name)] = _field(stage, param.name)
        info = _fields(model)[name]
        if info.is_required():
            assert param.required, param.opts
            continue
        default = CLI_DEFAULT.get((stage, param.name), info.get_default(call_default_factory=True))
        assert param.default == (",".join(map(str, default)) if isinstance(default, list) else default), param.opts
        if info.description is not None:
            assert param.help == info.description, param.opts


def _walk(model: type, data: dict, path: str) -> None:
    fields = _fields(model)
    for key, value in data.items():
        matches = [name for name, info in fields.items() if key in (name, info.alias)]
        assert len(matches) == 1, f"{path}{key}: fields {matches} of {model.__name__}"
        for inner in _models(fields[matches[0]].annotation):
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict):
                    _walk(inner, item, f"{path}{key}.")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_key_is_one_field(path):
    data = read_yaml(path, "pipeline file", "")
    PipelineConfig.model_validate(data)
    _walk(PipelineConfig, data, "")


def test_pipeline_sections_are_the_stage_models():
    fields = _fields(PipelineConfig)
    for key, model in SECTIONS.items():
        [section] = _models(fields[key if key != "validate" else "validate_"].annotation)
        assert section is model or issubclass(section, model), key
        base = _fields(model)
        added = {name for name, info in _fields(section).items() if name not in base or info.default != base[name].default}
        assert added == PIPELINE_ONLY.get(key, set()), key
    assert (ServeSection, BenchSection) == (_models(fields["serve"].annotation)[0], _models(fields["bench"].annotation)[0])
    stage = _fields(ValidateStageOptions)
    assert _models(stage["thresholds"].annotation) == [Thresholds] and _models(stage["recover"].annotation) == [RecoverOptions]


def test_a_verdict_fingerprint_is_the_same_from_the_cli_and_the_pipeline():
    """validate fingerprints ValidateOptions; the pipeline's recover/select/thresholds stay out of it."""
    section = ValidateStageOptions(recover=RecoverOptions(), thresholds=Thresholds(max_kl_mean=0.2))
    assert section.measuring().__dict__ == ValidateOptions().__dict__


def test_given_is_what_was_typed_not_the_models_defaults():
    """validate's threshold flags override a --thresholds file, serve's --tensor-parallel the plan, only when typed."""
    from typer.testing import CliRunner

    from quantship.commands.common import given, option

    toy = typer.Typer()

    @toy.command()
    def command(ctx: typer.Context, max_kl_mean: float = option(Thresholds, "max_kl_mean", "--max-kl-mean"),
                tensor_parallel: int = option(ServeOptions, "tensor_parallel", "--tensor-parallel")) -> None:
        typer.echo(",".join(sorted(given(ctx))))

    assert CliRunner().invoke(toy, []).output.strip() == ""
    assert CliRunner().invoke(toy, ["--tensor-parallel", "1"]).output.strip() == "tensor_parallel"
