"""pipeline.yaml loading: every shipped example is valid, bad keys are named by their path."""

import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from quantship.data.sources import TextSource
from quantship.errors import InputError
from quantship.formats.hardware import load_hardware
from quantship.pipeline.config import load_pipeline, parse_pipeline
from quantship.pipeline.runner import stage_range
from quantship.quantize.base import QuantizeContext
from quantship.quantize.registry import backend_for
from quantship.rundir import RunDir
from quantship.stages import STAGES
from tests.support.cli import quantship
from tests.support.model_configs import LLAMA3_8B, LLAMA3_70B, SMOLLM2_135M
from tests.support.requires import requires

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").rglob("*.yaml"))
MINIMAL = {"name": "t", "model": "demo", "quantize": {"variants": [{"name": "q8", "method": "gguf", "scheme": "Q8_0"}]}}


def test_examples_exist():
    assert len(EXAMPLES) >= 5  # the demo and the GPU / hub / CPU pipelines


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name if p.parent.name == "examples" else f"{p.parent.name}/{p.name}")
def test_every_example_loads_and_names_real_parts(path):
    config = load_pipeline(path)
    TextSource.parse(config.baseline.eval_source)
    TextSource.parse(config.calibrate.source)
    if config.plan is not None:
        load_hardware(config.plan.hardware)
    assert config.validate_.select == "smallest-passing"


# The model each example names -> its config.json (the examples' checkpoints are not here).
EXAMPLE_MODELS = {"Llama-3.1-8B": LLAMA3_8B, "Llama-3.1-70B": LLAMA3_70B, "demo": SMOLLM2_135M}


def _model_config(model: str) -> dict:
    [config] = [c for name, c in EXAMPLE_MODELS.items() if name in model]
    return config


def _example_variants():
    """(example, variant) pairs; GGUF variants need the llama.cpp toolchain to be checked."""
    for path in EXAMPLES:
        for variant in load_pipeline(path).quantize.variants:
            marks = [requires("llama.cpp")] if variant.method in ("gguf", "convert") else []
            yield pytest.param(path, variant, marks=marks, id=f"{path.stem}:{variant.name}")


@pytest.mark.parametrize(("path", "variant"), list(_example_variants()))
def test_every_example_variant_passes_its_backends_own_checks(path, variant, tmp_path):
    """The refusals quantize would raise (scheme, group size vs the model's layers,
    architecture mappings, calibration), run against the config.json of the model the
    example names: an example that quantize would refuse fails here."""
    checkpoint = tmp_path / "model"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps(_model_config(load_pipeline(path).model)))
    calibration = object()  # every pipeline calibrates before it quantizes
    ctx = QuantizeContext(checkpoint, calibration, RunDir(tmp_path / "run"), Console(stderr=True))
    backend_for(variant).check(variant, ctx)


def test_demo_pipeline_is_offline_and_served_on_this_cpu():
    config = load_pipeline(Path(__file__).parents[2] / "examples" / "demo" / "pipeline.yaml")
    assert config.model == "demo"
    assert all(not s.startswith("hf:") for s in (config.baseline.eval_source, config.calibrate.source))
    assert config.serve.stack in ("auto", "llama.cpp") and config.serve.baseline_stack in ("vllm-cpu", "llama.cpp")
    assert config.validate_.recover is not None  # 4-bit fails +10% on a 135M model without it


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"validate": {"thresholds": {"max_perplexity_delta": -1}}}, "validate.thresholds.max_perplexity_delta"),
        ({"validate": {"thresholds": {"max_ppl": 0.1}}}, "validate.thresholds.max_ppl"),
        ({"quantize": {"variants": [{"name": "q8", "method": "gguf", "schem": "Q8_0"}]}}, "quantize.variants.0.schem"),
        ({"quantize": {"variants": [{"name": "x", "method": "magic"}]}}, "quantize.variants.0.method"),
        ({"bench": {"concurrency": [0]}}, "bench.concurrency.0"),
        ({"serve": {"enabled": False}}, "(top level)"),  # bench needs serve
        ({"calibrate": {"samples": 0}}, "calibrate.samples"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_keys_are_refused_with_their_path(patch, key):
    with pytest.raises(InputError) as caught:
        parse_pipeline({**MINIMAL, **patch}, "p.yaml")
    message = caught.value.one_line()
    assert message.startswith(f"p.yaml: {key}: "), message
    assert "\n" not in message


def test_duplicate_variant_names_are_refused():
    data = {**MINIMAL, "quantize": {"variants": [MINIMAL["quantize"]["variants"][0]] * 2}}
    with pytest.raises(InputError, match="repeated: q8"):
        parse_pipeline(data, "p.yaml")


def test_yaml_errors_name_the_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: t\nmodel: [demo\n")
    with pytest.raises(InputError, match="line"):
        load_pipeline(path)
    with pytest.raises(InputError, match="does not exist"):
        load_pipeline(tmp_path / "missing.yaml")


def test_run_dir_defaults_to_runs_name(tmp_path):
    config = parse_pipeline(MINIMAL, "p.yaml")
    assert config.resolved_run_dir(tmp_path) == tmp_path / "runs" / "t"
    config = parse_pipeline({**MINIMAL, "run_dir": str(tmp_path / "elsewhere")}, "p.yaml")
    assert config.resolved_run_dir(Path("/nowhere")) == tmp_path / "elsewhere"


def test_stage_range():
    assert stage_range(None, None) == list(STAGES)
    assert stage_range("quantize", "validate") == ["quantize", "validate"]
    assert stage_range(None, "validate")[-1] == "validate" and "serve" not in stage_range(None, "validate")
    assert stage_range("bench", None) == ["bench", "rollout"]
    with pytest.raises(InputError, match="unknown stage"):
        stage_range("deploy", None)
    with pytest.raises(InputError, match="comes after"):
        stage_range("bench", "baseline")


def test_cli_check_and_exit_code_for_bad_file(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(MINIMAL))
    result = quantship("run", str(good), "--check", cwd=tmp_path)
    assert result.returncode == 0 and "valid" in result.stdout and str(tmp_path / "runs" / "t") in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**MINIMAL, "bench": {"requests": "many"}}))
    result = quantship("run", str(bad), cwd=tmp_path)
    assert result.returncode == 2 and "bench.requests" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing written for a refused pipeline


def test_missing_model_is_refused_before_anything_is_written(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "model": str(tmp_path / "no-such-model")}))
    result = quantship("run", str(path), cwd=tmp_path)
    assert result.returncode == 2 and "is not a folder" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_rollout_section_is_checked_against_the_gateway_config():
    keep = {"serve": {"keep_running": True}}
    config = parse_pipeline({**MINIMAL, **keep, "rollout": {"settings": {"min_samples": 50, "port": 8090}}}, "p.yaml")
    assert config.rollout.settings["min_samples"] == 50
    with pytest.raises(InputError, match="keep_running"):
        parse_pipeline({**MINIMAL, "rollout": {}}, "p.yaml")
    with pytest.raises(InputError, match=r"rollout: .*settings\.min_samples"):
        parse_pipeline({**MINIMAL, **keep, "rollout": {"settings": {"min_samples": 0}}}, "p.yaml")
    with pytest.raises(InputError, match="come from the run"):
        parse_pipeline({**MINIMAL, **keep, "rollout": {"settings": {"control": {}}}}, "p.yaml")


def test_rollout_config_points_the_gateway_at_both_servers(tmp_path):
    from types import SimpleNamespace

    from quantship.rollout.config import load_config
    from quantship.stages.rollout import rollout_config

    control = SimpleNamespace(base_url="http://127.0.0.1:8000/v1", served_model_name="SmolLM2-135M-Instruct")
    treatment = SimpleNamespace(base_url="http://127.0.0.1:8001/v1", served_model_name="q4km-mp2")
    config = rollout_config("demo", "q4km-mp2", control, treatment, tmp_path, {"min_samples": 50})
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path)
    assert (loaded.control.url, loaded.treatment.model) == ("http://127.0.0.1:8000", "q4km-mp2")
    assert loaded.experiment == "demo-q4km-mp2" and loaded.min_samples == 50
    assert loaded.store == f"sqlite:///{tmp_path / 'rollout' / 'state.db'}"
