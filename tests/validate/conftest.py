"""A tiny run directory for validate: a peaked tiny Llama, its baseline, a good and a broken variant."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from quantship.evaluate.baseline import BaselineOptions, run_baseline
from quantship.progress import stderr_console
from quantship.quantize.spec import VariantSpec
from quantship.quantize.variants import run_quantize
from quantship.rundir import RunDir
from tests.support.validate_runs import add_plain_variant, scale_lm_head


@pytest.fixture(scope="session")
def validate_run_template(tiny_checkpoint_template, tmp_path_factory) -> RunDir:
    checkpoint = Path(shutil.copytree(tiny_checkpoint_template, tmp_path_factory.mktemp("vckpt") / "tiny"))
    scale_lm_head(checkpoint, 10.0)
    run = RunDir(tmp_path_factory.mktemp("vruns") / "tiny")
    console = stderr_console()
    run_baseline(checkpoint, run, BaselineOptions(window=32, stride=32, max_windows=3, batch_size=3, topk=4, max_new_tokens=6), console)
    run_quantize(run, [VariantSpec(name="w8", method="rtn", scheme="W8A16", group_size=32)], console)
    add_plain_variant(run, "broken", checkpoint, lambda folder: scale_lm_head(folder, 10.0, seed=1))
    return run


@pytest.fixture
def validate_run(validate_run_template, tmp_path) -> RunDir:
    return RunDir(Path(shutil.copytree(validate_run_template.root, tmp_path / "run")))
