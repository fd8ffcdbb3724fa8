"""Every stage has the same shape, and serve/bench resume by fingerprint like the others."""

from __future__ import annotations

import inspect
import json
from types import SimpleNamespace

import pytest

from quantship import layout
from quantship.options import BenchSection, ServeSection
from quantship.pipeline.config import PipelineConfig
from quantship.pipeline.runner import SECTION
from quantship.progress import stderr_console
from quantship.rundir import RunDir
from quantship.stages import STAGES, Context, stage
from quantship.stages import bench as bench_stage
from quantship.stages.serve import CONTROL, Servers
from tests.support.openai_stub import OpenAIStub
from tests.support.serve_files import W8A8_INT8, make_variant

RUNNER = inspect.getsource(__import__("quantship.pipeline.runner", fromlist=["x"]))


@pytest.mark.parametrize("name", STAGES)
def test_each_stage_module_has_options_run_and_load(name):
    module = stage(name)
    assert list(inspect.signature(module.run).parameters)[:3] == ["run_dir", "options", "context"]
    assert list(inspect.signature(module.load).parameters) == ["run_dir"]
    section = PipelineConfig.model_fields[SECTION.get(name, name)].annotation
    assert module.Options is section or module.Options in getattr(section, "__args__", ()), name  # one model per stage


def test_the_runner_has_no_per_stage_code():
    """A loop over STAGES: no stage is named in the runner (the options' key map aside)."""
    body = RUNNER.split("class Pipeline", 1)[1]
    assert not [name for name in STAGES if f'"{name}"' in body or f"_{name}(" in body]


class StubServers(Servers):
    """The run's servers, as two OpenAI stubs: counts how often bench needed them."""

    def __init__(self, options, console, stubs):
        super().__init__(options, console)
        self.stubs, self.ensured = stubs, 0

    def ensure(self, run_dir):
        self.ensured += 1
        variant = json.loads((run_dir.root / layout.VALIDATION / layout.SELECTED).read_text())["selected"]
        self.started = {
            label: SimpleNamespace(base_url=stub.base_url, served_model_name="stub-model", stop=lambda: None)
            for label, stub in zip((CONTROL, variant), self.stubs, strict=True)
        }
        return self.started


def _selected_run(root):
    runs = RunDir(root)
    with runs.stage(layout.BASELINE, {}, {}):
        pass
    make_variant(root, "w8")
    selection = {"selected": "w8", "variant_fingerprint": runs.manifest(layout.variant("w8"))["fingerprint"]}
    (root / layout.VALIDATION / layout.SELECTED).write_text(json.dumps(selection))
    return runs


def test_bench_is_kept_while_its_fingerprint_holds_and_redone_when_what_was_served_changed(tmp_path):
    runs = _selected_run(tmp_path / "run")
    options = BenchSection(api="completions", concurrency=[1], requests=2, warmup=0, max_tokens=4, rounds=1,
                           server_metrics=False)
    with OpenAIStub(tokens=4) as control, OpenAIStub(tokens=4) as treatment:
        servers = StubServers(ServeSection(), stderr_console(), (control, treatment))
        context = Context(stderr_console(), servers=servers)
        first = bench_stage.run(runs, options, context)
        assert first.status == "ran" and servers.ensured == 1 and "x" in first.detail  # variant/baseline ratio
        again = bench_stage.run(runs, options, context)
        assert again.status == "kept" and servers.ensured == 1  # no server needed to keep it
        assert bench_stage.run(runs, options.model_copy(update={"requests": 3}), context).status == "ran"
        make_variant(runs.root, "w8", quant=W8A8_INT8, method="rtn")  # quantized again: a different model
        selection = {"selected": "w8", "variant_fingerprint": runs.manifest(layout.variant("w8"))["fingerprint"]}
        (runs.root / layout.VALIDATION / layout.SELECTED).write_text(json.dumps(selection))
        assert bench_stage.needs_servers(runs, options.model_copy(update={"requests": 3}), context)
    assert bench_stage.load(runs).summaries[0].requests == 3
