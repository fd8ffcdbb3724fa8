"""The interface every quantization backend implements.

The quantize stage owns the run directory, the manifest and the measurements that
hold for every format; a backend only turns a checkpoint into files in `out_dir`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from quantship.data.calibration import CalibrationSet
from quantship.quantize.spec import VariantSpec
from quantship.rundir import RunDir


@dataclass
class QuantizeContext:
    checkpoint: Path  # the baseline Hugging Face checkpoint folder
    calibration: CalibrationSet | None  # None when the run has no calibration stage yet
    run_dir: RunDir
    console: Console


@dataclass
class VariantOutput:
    """What a backend produced, for the stage to record in the variant's manifest.

    What format the files are is not the backend's to say: the stage records
    `quantship.formats.identify` of the written folder, the answer every later stage reads.
    """

    bits_per_weight: float  # measured from the written tensors, not from the scheme's name
    details: dict[str, Any] = field(default_factory=dict)  # recipe, per-tensor types, fallbacks
    warnings: list[str] = field(default_factory=list)


class QuantizeBackend(Protocol):
    name: str

    def check(self, spec: VariantSpec, ctx: QuantizeContext) -> None:
        """Refuse an impossible request up front with an InputError naming the fix."""

    def quantize(self, spec: VariantSpec, ctx: QuantizeContext, out_dir: Path) -> VariantOutput:
        """Write the variant's files into `out_dir` (a staging folder)."""
