"""Fixtures for the deploy tests: a finished GPU run (tests/support/deploy_runs.py) and Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.deploy_runs import make_run
from tests.support.requires import check


@pytest.fixture
def gpu_run(tiny_checkpoint, tmp_path) -> Path:
    return make_run(tmp_path / "runs" / "demo", tiny_checkpoint)


@pytest.fixture
def shared_redis(request) -> str:
    """A real redis-server (setup installs it, so CI fails without it)."""
    check("redis-server")
    return request.getfixturevalue("redis_url")
