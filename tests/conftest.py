"""Shared fixtures (a tiny random Llama checkpoint built in process, the demo model) and the
hooks behind `requires(...)`, the `gpu` marker and fixture setup budgets (tests/support/)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.budget import setup_budget
from tests.support.plugin import pytest_collection_modifyitems, pytest_runtest_setup  # noqa: F401 (hooks)
from tests.support.redis_server import redis_url  # noqa: F401 (fixture: a real redis-server)
from tests.support.requires import demo_checkpoint_or_skip
from tests.support.tiny_model import build_tiny_checkpoint

# Dequantizing the demo GGUF and saving it: ~30 s idle, minutes on shared cores.
DEMO_BUILD_BUDGET_S = 600


@pytest.fixture(scope="session")
def tiny_checkpoint_template(tmp_path_factory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture
def tiny_checkpoint(tiny_checkpoint_template, tmp_path) -> Path:
    """A private copy, so a test may corrupt or edit it."""
    import shutil

    return Path(shutil.copytree(tiny_checkpoint_template, tmp_path / "tiny-llama"))


@pytest.fixture(scope="session")
@setup_budget(DEMO_BUILD_BUDGET_S)
def demo_checkpoint() -> Path:
    """The real demo model (SmolLM2-135M-Instruct), built once into the user cache."""
    return demo_checkpoint_or_skip()


@pytest.fixture(autouse=True)
def _quiet_tokenizers():
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
