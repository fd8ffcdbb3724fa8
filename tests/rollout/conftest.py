"""Fixtures for rollout tests: stub backends and a webhook sink (helpers live in helpers.py)."""

from __future__ import annotations

import pytest

from tests.support.gateway import TOKEN, WebhookSink
from tests.support.openai_stub import OpenAIStub


@pytest.fixture(autouse=True)
def _admin_token(monkeypatch):
    monkeypatch.setenv("QUANTSHIP_ROLLOUT_TOKEN", TOKEN)


@pytest.fixture
def control():
    with OpenAIStub(mode="normal", tokens=24, model="control-served") as stub:
        yield stub


@pytest.fixture
def treatment():
    with OpenAIStub(mode="normal", tokens=24, model="treatment-served") as stub:
        yield stub


@pytest.fixture
def webhook():
    sink = WebhookSink()
    yield sink
    sink.close()
