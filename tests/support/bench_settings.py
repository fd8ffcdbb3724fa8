"""Bench targets and settings against the loopback stub, shared by the bench tests."""

from __future__ import annotations

from quantship.bench.models import BenchSettings, Target
from tests.support.openai_stub import OpenAIStub


def target_for(stub: OpenAIStub, label: str = "a", api: str = "chat") -> Target:
    return Target(label=label, base_url=stub.base_url, model=stub.behaviour.model, api=api)


def settings(**changes) -> BenchSettings:
    base = dict(
        mode="concurrency",
        levels=[1.0],
        requests=4,
        warmup=0,
        max_tokens=8,
        ignore_eos=True,
        rounds=2,
        seed=0,
        timeout_s=30.0,
        prompts="builtin",
        prompt_count=32,
    )
    return BenchSettings(**{**base, **changes})
