"""The loopback stub for bench tests (targets and settings: tests/support/bench_settings.py)."""

from __future__ import annotations

import pytest

from tests.support.openai_stub import OpenAIStub


@pytest.fixture
def stub():
    with OpenAIStub(mode="normal", tokens=8) as server:
        yield server
