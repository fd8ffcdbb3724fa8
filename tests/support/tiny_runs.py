"""A real run directory (baseline + calibration) on a small checkpoint, for the quantize tests."""

from __future__ import annotations

from pathlib import Path

from quantship.evaluate.baseline import BaselineOptions, run_baseline
from quantship.progress import stderr_console
from quantship.rundir import RunDir
from quantship.stages.calibrate import CalibrationOptions, run_calibrate


def make_run(checkpoint: Path, root: Path, calibrate: bool = True) -> RunDir:
    run = RunDir(root)
    console = stderr_console()
    run_baseline(checkpoint, run, BaselineOptions(window=64, stride=64, max_windows=2, batch_size=2, topk=4, max_new_tokens=2), console)
    if calibrate:
        run_calibrate(checkpoint, run, CalibrationOptions(samples=8, seq_len=32), console)
    return run
