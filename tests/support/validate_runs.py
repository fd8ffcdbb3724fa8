"""Helpers for the validate tests: a peaked tiny Llama, plain variants, the validate CLI in process."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from quantship.rundir import RunDir
from tests.support.cli import in_process


def scale_lm_head(folder: Path, factor: float, seed: int | None = None) -> None:
    """Random init gives near-uniform next-token distributions; a scaled head makes them peaked."""
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    head = tensors["lm_head.weight"].float()
    if seed is not None:
        head = torch.randn(head.shape, generator=torch.Generator().manual_seed(seed)) * head.std()
    tensors["lm_head.weight"] = (head * factor).to(torch.bfloat16)
    save_file(tensors, str(path), metadata={"format": "pt"})


def add_plain_variant(run: RunDir, name: str, checkpoint: Path, edit=None) -> None:
    """A bf16 safetensors variant published like the quantize stage does (manifest last)."""
    with run.stage(f"variants/{name}", {"name": name}, {}) as stage:
        shutil.copytree(checkpoint, stage.staging, dirs_exist_ok=True)
        if edit is not None:
            edit(stage.staging)
        stage.extra.update(format="safetensors", method="none", scheme="BF16", bits_per_weight=16.0, overrides=[],
                           size_bytes=sum(p.stat().st_size for p in stage.staging.rglob("*") if p.is_file()))


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`quantship validate ARGS` in process."""
    return in_process(monkeypatch, capsys, "validate", *args)
