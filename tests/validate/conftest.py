"""A tiny run directory for validate: a peaked tiny Llama, its baseline, a good and a broken variant."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from quantship.progress import stderr_console
from quantship.quantize.spec import VariantSpec
from quantship.quantize.stage import run_quantize
from quantship.rundir import RunDir
from quantship.stages.baseline import BaselineOptions, run_baseline


def _scale_lm_head(folder: Path, factor: float, seed: int | None = None) -> None:
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


@pytest.fixture(scope="session")
def validate_run_template(tiny_checkpoint_template, tmp_path_factory) -> RunDir:
    checkpoint = Path(shutil.copytree(tiny_checkpoint_template, tmp_path_factory.mktemp("vckpt") / "tiny"))
    _scale_lm_head(checkpoint, 10.0)
    run = RunDir(tmp_path_factory.mktemp("vruns") / "tiny")
    console = stderr_console()
    run_baseline(checkpoint, run, BaselineOptions(window=32, stride=32, max_windows=3, batch_size=3, topk=4, max_new_tokens=6), console)
    run_quantize(run, [VariantSpec(name="w8", method="rtn", scheme="W8A16", group_size=32)], console)
    add_plain_variant(run, "broken", checkpoint, lambda folder: _scale_lm_head(folder, 10.0, seed=1))
    return run


@pytest.fixture
def validate_run(validate_run_template, tmp_path) -> RunDir:
    return RunDir(Path(shutil.copytree(validate_run_template.root, tmp_path / "run")))


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from quantship.cli import main

    monkeypatch.setattr(sys, "argv", ["quantship", "validate", *args])
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code
    out, err = capsys.readouterr()
    return code, out, err
