"""The vllm-cpu environment's bookkeeping: status and the setup hint (its torch: test_torch_wheel)."""

from __future__ import annotations

import json

import pytest

from quantship.envs import vllm_cpu
from quantship.errors import InputError


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTSHIP_HOME", str(tmp_path))
    return tmp_path


def test_missing_env_is_not_ready_and_names_the_setup_command(home):
    state = vllm_cpu.status()
    assert state["ready"] is False and state["path"] == str(home / "envs" / "vllm-cpu-0.32.0")
    with pytest.raises(InputError, match="quantship setup vllm-cpu"):
        vllm_cpu.require_ready()


def test_env_with_its_stamp_is_ready(home):
    python = vllm_cpu.env_python()
    python.parent.mkdir(parents=True)
    python.write_text("")
    assert vllm_cpu.status()["ready"] is False  # no stamp: an interrupted setup
    (vllm_cpu.env_dir() / vllm_cpu.STAMP).write_text(json.dumps({"vllm": "0.32.0", "torch": "2.13.0+cpu"}))
    assert vllm_cpu.status()["ready"] is True and vllm_cpu.require_ready() == python
