"""`quantship demo-model` as a user runs it: prints the checkpoint folder, reuses the cache,
builds the same checkpoint into another folder."""

from __future__ import annotations

import pytest

from quantship.rundir import sha256_file
from tests.support.cli import quantship

pytestmark = pytest.mark.e2e


def test_demo_model_prints_the_cached_checkpoint_without_rebuilding_it(demo_checkpoint):
    stamp = demo_checkpoint / "quantship-source.json"
    before = stamp.stat().st_mtime_ns
    result = quantship("demo-model")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(demo_checkpoint)
    assert stamp.stat().st_mtime_ns == before


def test_demo_model_cache_dir_builds_the_same_checkpoint_there(demo_checkpoint, tmp_path):
    result = quantship("demo-model", "--cache-dir", str(tmp_path / "models"))
    assert result.returncode == 0, result.stderr
    built = tmp_path / "models" / demo_checkpoint.name
    assert result.stdout.strip() == str(built)
    # the build is deterministic: same weights and tokenizer as the cached copy
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert sha256_file(built / name) == sha256_file(demo_checkpoint / name), name
    assert not list((tmp_path / "models").glob(".staging-*"))
