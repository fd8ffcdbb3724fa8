"""Which torch wheel setup installs, decided by the real pip against local indexes.

Two file:// indexes stand in for PyPI (torch 2.13.0, the CUDA build's name) and
PyTorch's CPU index (torch 2.13.0+cpu), with this machine's pip configuration switched
off as on a fresh box. `scripts/fresh-box-torch.py` does the same against the real indexes.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

import pytest

from quantship.envs import torch_wheel

VERSION = "2.13.0"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]


def fake_index(root: Path, version: str) -> str:
    """A PEP 503 index holding one metadata-only torch wheel of `version`."""
    folder = root / "torch"
    folder.mkdir(parents=True)
    wheel = folder / f"torch-{version}-py3-none-any.whl"
    dist_info = f"torch-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
        archive.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{dist_info}/RECORD", "")
    (folder / "index.html").write_text(f'<a href="{wheel.name}">{wheel.name}</a>\n', encoding="utf-8")
    return root.as_uri()


@pytest.fixture
def fresh_box(tmp_path, monkeypatch):
    """No pip configuration; the default index is a stand-in PyPI with only the CUDA-named torch."""
    for name in [n for n in os.environ if n.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", fake_index(tmp_path / "pypi", VERSION))
    monkeypatch.setenv(torch_wheel.CPU_INDEX_ENV, fake_index(tmp_path / "cpu-index", f"{VERSION}+cpu"))
    monkeypatch.setattr(torch_wheel, "gpu_present", lambda: False)
    return tmp_path


def test_without_a_gpu_torch_comes_from_the_cpu_index(fresh_box):
    assert torch_wheel.resolve(PIP, f"torch=={VERSION}")["version"] == VERSION  # what plain pip would take
    args = torch_wheel.cpu_install_args(PIP, VERSION)
    assert args == ["--extra-index-url", (fresh_box / "cpu-index").as_uri(), f"torch=={VERSION}+cpu"]
    chosen = torch_wheel.resolve(PIP, args[-1], *args[:-1])
    assert chosen["version"] == f"{VERSION}+cpu"
    assert chosen["url"].startswith((fresh_box / "cpu-index").as_uri())


def test_a_configured_source_with_the_cpu_wheel_is_used_as_it_is(fresh_box, monkeypatch):
    local = fresh_box / "local-wheels"
    fake_index(local, f"{VERSION}+cpu")
    monkeypatch.setenv("PIP_FIND_LINKS", str(local / "torch"))
    assert torch_wheel.cpu_install_args(PIP, VERSION) == [f"torch=={VERSION}"]


def test_an_unreachable_index_still_names_the_cpu_index(fresh_box, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", (fresh_box / "nowhere").as_uri())
    assert torch_wheel.cpu_install_args(PIP, VERSION)[-1] == f"torch=={VERSION}+cpu"


def test_the_project_venv_takes_the_cuda_build_where_a_gpu_is(fresh_box, monkeypatch):
    monkeypatch.setattr(torch_wheel.metadata, "version", _not_installed)
    monkeypatch.setattr(torch_wheel, "gpu_present", lambda: True)
    assert torch_wheel.project_install_args(PIP, VERSION) == [f"torch=={VERSION}"]
    monkeypatch.setattr(torch_wheel, "gpu_present", lambda: False)
    assert torch_wheel.project_install_args(PIP, VERSION)[-1] == f"torch=={VERSION}+cpu"


def test_an_installed_torch_of_the_pinned_version_is_kept_whatever_its_build(monkeypatch):
    """A rerun neither asks an index nor aborts a CPU user who has the CUDA build."""
    monkeypatch.setattr(torch_wheel.metadata, "version", lambda name: f"{VERSION}")
    monkeypatch.setattr(torch_wheel, "resolve", _must_not_resolve)
    assert torch_wheel.project_install_args(PIP, VERSION) == [f"torch=={VERSION}"]
    monkeypatch.setattr(torch_wheel.metadata, "version", lambda name: "2.12.0+cpu")
    monkeypatch.setattr(torch_wheel, "gpu_present", lambda: True)
    assert torch_wheel.project_install_args(PIP, VERSION) == [f"torch=={VERSION}"]


def test_a_cuda_build_without_a_gpu_is_a_warning_naming_the_switch(monkeypatch):
    import torch

    monkeypatch.setattr(torch, "__version__", VERSION)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    warning = torch_wheel.installed_warning()
    assert warning.startswith(f"warning: torch {VERSION} is a CUDA build")
    assert f"--extra-index-url {torch_wheel.CPU_INDEX_URL} torch=={VERSION}+cpu" in warning
    monkeypatch.setattr(torch, "__version__", f"{VERSION}+cpu")
    assert torch_wheel.installed_warning() is None


def test_the_pin_is_read_from_quantships_metadata(monkeypatch):
    requires = ["transformers==5.17.0", f"torch=={VERSION}", 'pytest>=8; extra == "test"']
    monkeypatch.setattr(torch_wheel.metadata, "requires", lambda name: requires)
    assert torch_wheel.project_pin() == VERSION
    monkeypatch.setattr(torch_wheel.metadata, "requires", lambda name: requires[:1])
    with pytest.raises(torch_wheel.InputError, match="pins no torch version"):
        torch_wheel.project_pin()


def test_a_gpu_is_seen_through_nvidia_smi_or_its_device(monkeypatch):
    monkeypatch.setattr(torch_wheel.shutil, "which", lambda tool: None)
    monkeypatch.setattr(torch_wheel.glob, "glob", lambda pattern: [])
    assert torch_wheel.gpu_present() is False
    monkeypatch.setattr(torch_wheel.glob, "glob", lambda pattern: ["/dev/nvidia0"])
    assert torch_wheel.gpu_present() is True


def _not_installed(name):
    raise torch_wheel.metadata.PackageNotFoundError(name)


def _must_not_resolve(*args):
    raise AssertionError("resolved although torch was installed")
