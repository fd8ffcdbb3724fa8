"""The suite's own guards: a missing dependency skips locally and fails under CI, `gpu` tests
skip without CUDA even under CI, and a budgeted fixture's setup does not eat one test's timeout.

Each case runs a real pytest in a subprocess on a small test file, with the suite's hooks
loaded as a plugin and a PATH on which redis-server cannot be found.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
INNER = '''
import time
import pytest
import torch  # imported here, at collection: the gpu hook's import must not eat the 1 s timeout
from tests.support.budget import setup_budget
from tests.support.requires import requires

@pytest.fixture(scope="module")
@setup_budget(30)
def slow_setup():
    time.sleep(2)  # twice the per-test timeout: only the budget lets it through

@requires("redis-server")
def test_needs_redis():
    pass

@pytest.mark.gpu
def test_needs_cuda():
    pass

def test_first_user(slow_setup):
    pass

def test_second_user(slow_setup):
    pass

def test_slow_body_still_times_out():
    time.sleep(3)
'''


def run_inner(tmp_path: Path, *args: str, ci: bool) -> dict[str, str]:
    """test name -> outcome (PASSED/FAILED/SKIPPED/ERROR) of the inner run, plus its stdout and exit status."""
    (tmp_path / "test_inner.py").write_text(INNER)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(PATH=str(Path(sys.executable).parent), PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'src'}")
    if ci:
        env["CI"] = "true"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.support.plugin", "-p", "no:cacheprovider", "-rA",
         "--timeout", "1", "-o", "addopts=", "-c", os.devnull, "--rootdir", str(tmp_path), str(tmp_path), *args],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    outcomes = dict(
        (name, outcome) for outcome, name in re.findall(r"^(PASSED|FAILED|SKIPPED|ERROR) .*?::(\w+)", result.stdout, re.M)
    )
    skipped = re.findall(r"^SKIPPED \[\d+\] \S+: (.*)$", result.stdout, re.M)
    for reason in skipped:  # -rA names a skip by its location, not its test
        if "redis-server" in reason:
            outcomes["test_needs_redis"] = "SKIPPED"
        if "CUDA" in reason:
            outcomes["test_needs_cuda"] = "SKIPPED"
    return {**outcomes, "_stdout": result.stdout, "_rc": result.returncode}


def test_missing_dependency_skips_locally_with_the_reason(tmp_path):
    outcomes = run_inner(tmp_path, "-k", "redis", ci=False)
    assert outcomes["test_needs_redis"] == "SKIPPED" and outcomes["_rc"] == 0
    assert "redis-server is not installed" in outcomes["_stdout"]


def test_missing_dependency_fails_under_ci(tmp_path):
    outcomes = run_inner(tmp_path, "-k", "redis", ci=True)
    # failed in setup (pytest reports ERROR), and the run's exit status says so
    assert outcomes["test_needs_redis"] == "ERROR" and outcomes["_rc"] == 1
    assert "CI=true and redis-server is not installed" in outcomes["_stdout"]


@pytest.mark.parametrize("ci", [False, True], ids=["local", "ci"])
def test_gpu_tests_skip_cleanly_without_cuda_even_under_ci(tmp_path, ci):
    outcomes = run_inner(tmp_path, "-k", "cuda", ci=ci)
    assert outcomes["test_needs_cuda"] == ("PASSED" if torch.cuda.is_available() else "SKIPPED")


def test_the_first_selected_user_of_a_budgeted_fixture_gets_its_budget(tmp_path):
    outcomes = run_inner(tmp_path, "-k", "user or slow_body", ci=False)
    # the 2 s setup fits the first user's 1 s + 30 s; the second reuses the module fixture
    assert outcomes["test_first_user"] == outcomes["test_second_user"] == "PASSED"
    assert outcomes["test_slow_body_still_times_out"] == "FAILED" and "Timeout" in outcomes["_stdout"]


def test_the_budget_follows_the_selection(tmp_path):
    # with the first user deselected, the second one sets the fixture up and needs the budget
    assert run_inner(tmp_path, "-k", "second_user", ci=False)["test_second_user"] == "PASSED"
