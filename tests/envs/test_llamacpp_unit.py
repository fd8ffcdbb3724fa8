"""The llama.cpp toolchain's bookkeeping: status, the not-set-up error, build progress parsing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from quantship.envs import llamacpp, system_packages
from quantship.errors import InputError, NotAvailable
from quantship.rundir import atomic_write_json
from tests.support.requires import requires


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTSHIP_HOME", str(tmp_path))
    return tmp_path


def test_status_of_a_missing_toolchain_is_not_ready(empty_home):
    state = llamacpp.status()
    assert state["ready"] is False
    assert state["path"] == str(empty_home / "envs" / f"llama.cpp-{llamacpp.LLAMA_CPP_PYTHON_VERSION}")
    assert state["setup_command"] == "quantship setup llama.cpp"


def test_load_without_setup_names_the_setup_command(empty_home):
    with pytest.raises(NotAvailable, match=r"run `quantship setup llama.cpp` \(about \d+ min") as raised:
        llamacpp.load()
    assert raised.value.exit_code == 2


def test_a_stamp_whose_files_are_gone_is_not_ready(empty_home):
    root = llamacpp.env_dir()
    root.mkdir(parents=True)
    present = root / "llama-quantize"
    present.write_text("")
    atomic_write_json(
        root / llamacpp.STAMP,
        {"version": "x", "llama_cpp_build": "y", "architectures": [],
         "paths": {"llama_quantize": str(present), "llama_server": str(root / "gone")}},
    )
    state = llamacpp.status()
    assert state["ready"] is False
    assert "llama_server" in state["missing"] and "llama_quantize" not in state["missing"]
    with pytest.raises(NotAvailable, match="missing: llama_server"):
        llamacpp.load()


def test_a_build_with_other_configure_flags_is_rebuilt(empty_home, monkeypatch):
    """An older build (e.g. with AMX kernels, which die with SIGILL on AMX CPUs) is not reused."""
    root = llamacpp.env_dir()
    root.mkdir(parents=True)
    binary = root / "llama-server"
    binary.write_text("")
    monkeypatch.setattr(llamacpp, "_installed_bindings_version", lambda: llamacpp.LLAMA_CPP_PYTHON_VERSION)
    monkeypatch.setattr(llamacpp, "_bindings_lib_dir", lambda: root)
    (root / "libllama.so").write_text("")
    stamp = {"version": "x", "llama_cpp_build": "y", "architectures": [], "paths": {"llama_server": str(binary)}}
    atomic_write_json(root / llamacpp.STAMP, {**stamp, "cmake_flags": llamacpp.cmake_flags()})
    assert llamacpp.status()["ready"] is True
    atomic_write_json(root / llamacpp.STAMP, {**stamp, "cmake_flags": ["-DGGML_NATIVE=ON"]})
    state = llamacpp.status()
    assert state["ready"] is False and any("current configure flags" in m for m in state["missing"])


def test_x86_builds_leave_out_amx(monkeypatch):
    monkeypatch.setattr(llamacpp.platform, "machine", lambda: "x86_64")
    assert "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" in llamacpp.cmake_flags()
    assert "-DGGML_NATIVE=ON" in llamacpp.cmake_flags()
    monkeypatch.setattr(llamacpp.platform, "machine", lambda: "aarch64")
    assert not any("amx" in flag for flag in llamacpp.cmake_flags())


def test_build_progress_lines_from_ninja_and_make():
    assert llamacpp._parse_build_step("[12/218] Building CXX object src/llama.cpp.o\n") == (12, 218)
    assert llamacpp._parse_build_step("[ 45%] Building C object ggml.c.o") == (45, 100)
    assert llamacpp._parse_build_step("-- Configuring done") is None


def test_setup_refuses_without_cmake_or_a_compiler_before_downloading(empty_home, monkeypatch):
    absent = {"cmake", "c++"}
    monkeypatch.setattr(llamacpp.shutil, "which", lambda tool: None if tool in absent else "/usr/bin/" + tool)
    monkeypatch.setattr(system_packages, "distro", lambda: "ubuntu")
    monkeypatch.setattr(llamacpp, "_download", _must_not_download)
    from rich.console import Console

    with pytest.raises(InputError, match=r"needs cmake, a C\+\+ compiler, not found on PATH; "
                                          r"install them: `sudo apt-get install -y cmake build-essential`"):
        llamacpp.setup(Console(stderr=True))
    assert not llamacpp.env_dir().exists()


def _must_not_download(*args):
    raise AssertionError("the download started without a compiler")


@pytest.mark.e2e
@requires("llama.cpp")
def test_the_built_toolchain_runs():
    """After `quantship setup llama.cpp`: binaries, converter and bindings all work."""
    tool = llamacpp.load()
    for binary in (tool.llama_server, tool.llama_quantize, tool.llama_imatrix):
        assert os.access(binary, os.X_OK)
    assert "LlamaForCausalLM" in tool.architectures
    done = subprocess.run([str(tool.llama_server), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "version" in done.stdout + done.stderr
    # The bindings load the toolchain's own libllama (no second build of llama.cpp).
    code = "import llama_cpp, os; print(os.path.realpath(llama_cpp.llama_cpp._base_path / 'libllama.so'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == os.path.realpath(tool.lib_dir / "libllama.so")
