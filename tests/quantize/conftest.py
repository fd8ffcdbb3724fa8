"""A tiny run directory (real baseline + calibration on the tiny Llama) for the quantize tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from quantship.progress import stderr_console
from quantship.rundir import RunDir
from quantship.stages.baseline import BaselineOptions, run_baseline
from quantship.stages.calibrate import CalibrationOptions, run_calibrate


def make_run(checkpoint: Path, root: Path, calibrate: bool = True) -> RunDir:
    run = RunDir(root)
    console = stderr_console()
    run_baseline(checkpoint, run, BaselineOptions(window=64, stride=64, max_windows=2, batch_size=2, topk=4, max_new_tokens=2), console)
    if calibrate:
        run_calibrate(checkpoint, run, CalibrationOptions(samples=8, seq_len=32), console)
    return run


@pytest.fixture(scope="session")
def tiny_run_template(tiny_checkpoint_template, tmp_path_factory) -> RunDir:
    return make_run(tiny_checkpoint_template, tmp_path_factory.mktemp("runs") / "tiny")


@pytest.fixture
def tiny_run(tiny_run_template, tmp_path) -> RunDir:
    """A private copy of the calibrated tiny run (baseline + calibration)."""
    return RunDir(Path(shutil.copytree(tiny_run_template.root, tmp_path / "run")))
