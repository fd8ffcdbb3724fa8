"""What to serve: a variant of a run directory, or a checkpoint path, and what it is.

What the files are comes from `quantship.formats.identify` (the stack and vLLM's
`--quantization` follow from it); a variant's manifest records the same answer when it
was quantized, and the two are cross-checked so an edited folder is not served as
something else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantship.errors import InputError
from quantship.formats.identify import Artifact, identify
from quantship.rundir import RunDir


@dataclass(frozen=True)
class ServeTarget:
    """One model to serve and what is known about it."""

    artifact: Artifact
    name: str  # served model name
    variant: str | None = None  # set when it comes from a run directory
    run_dir: Path | None = None
    manifest: dict[str, Any] | None = None

    @property
    def path(self) -> Path:
        """The checkpoint folder, or the .gguf file."""
        return self.artifact.path

    @property
    def folder(self) -> Path:
        return self.artifact.folder


def from_model_path(path: Path, name: str | None = None) -> ServeTarget:
    """A checkpoint folder (config.json) or a .gguf file (or a folder holding one)."""
    artifact = identify(path)
    return ServeTarget(artifact=artifact, name=name or (artifact.path.stem if artifact.container == "gguf" else artifact.path.name))


def from_variant(run_dir: Path, variant: str) -> ServeTarget:
    """A quantized variant `runs/<name>/variants/<variant>/` with its manifest."""
    runs = RunDir(run_dir)
    folder = runs.require(f"variants/{variant}", "quantship quantize")
    manifest = runs.manifest(f"variants/{variant}") or {}
    artifact = identify(folder)
    recorded = manifest.get("artifact")
    if recorded is not None and recorded != artifact.as_record():
        raise InputError(
            f"variant {variant}: its manifest records {recorded} but the files are {artifact.as_record()}",
            f"re-run `quantship quantize --run-dir {run_dir}` for this variant",
        )
    return ServeTarget(artifact=artifact, name=variant, variant=variant, run_dir=Path(run_dir), manifest=manifest)
