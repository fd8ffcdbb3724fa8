"""Geometries of real models, from the hand-written configs in tests/support/model_configs.py."""

from __future__ import annotations

import pytest

from quantship.plan.geometry import ModelGeometry, geometry_from_config
from tests.support.model_configs import LLAMA2_13B, LLAMA3_8B, LLAMA3_70B, QWEN2_0_5B, SMOLLM2_135M


@pytest.fixture
def configs() -> dict[str, dict]:
    return {
        "llama2_13b": LLAMA2_13B, "llama3_8b": LLAMA3_8B, "llama3_70b": LLAMA3_70B,
        "smollm2": SMOLLM2_135M, "qwen2_0_5b": QWEN2_0_5B,
    }


@pytest.fixture
def llama2_13b() -> ModelGeometry:
    return geometry_from_config(LLAMA2_13B, "llama-2-13b")


@pytest.fixture
def llama3_8b() -> ModelGeometry:
    return geometry_from_config(LLAMA3_8B, "llama-3-8b")


@pytest.fixture
def llama3_70b() -> ModelGeometry:
    return geometry_from_config(LLAMA3_70B, "llama-3-70b")


@pytest.fixture
def smollm2() -> ModelGeometry:
    return geometry_from_config(SMOLLM2_135M, "smollm2-135m")
