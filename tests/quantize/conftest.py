"""A tiny run directory (real baseline + calibration on the tiny Llama) for the quantize tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from quantship.rundir import RunDir
from tests.support.tiny_runs import make_run


@pytest.fixture(scope="session")
def tiny_run_template(tiny_checkpoint_template, tmp_path_factory) -> RunDir:
    return make_run(tiny_checkpoint_template, tmp_path_factory.mktemp("runs") / "tiny")


@pytest.fixture
def tiny_run(tiny_run_template, tmp_path) -> RunDir:
    """A private copy of the calibrated tiny run (baseline + calibration)."""
    return RunDir(Path(shutil.copytree(tiny_run_template.root, tmp_path / "run")))
