"""Fixtures for serve tests: a run directory path (the fake files: tests/support/serve_files.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "demo"
