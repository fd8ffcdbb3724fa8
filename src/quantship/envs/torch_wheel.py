"""Which torch wheel pip should install: the CPU build on a machine without a GPU.

PyPI serves torch's CUDA build under the plain version (a ~900 MB wheel that pulls
~3 GB of nvidia-* packages); the CPU build, `<version>+cpu`, lies only on PyTorch's own
CPU index. So: where pip's configured sources already offer the CPU wheel (a local
folder, a mirror) they are used as they are; where they do not and no GPU is present,
the CPU build is taken from PyTorch's CPU index; where a GPU is present, the CUDA build
is what the project venv wants. vLLM's CPU environment wants the CPU build everywhere.

Stdlib only: `scripts/setup.sh` runs `python -m quantship.envs.torch_wheel pip-args`
after installing quantship without its dependencies, before torch is there.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from quantship.errors import InputError

CPU_INDEX_URL = "https://download.pytorch.org/whl/cpu"
# A mirror of PyTorch's CPU index (a company proxy, or a local folder in the fresh-box check).
CPU_INDEX_ENV = "QUANTSHIP_TORCH_CPU_INDEX"


def cpu_index_url() -> str:
    return os.environ.get(CPU_INDEX_ENV) or CPU_INDEX_URL


def gpu_present() -> bool:
    """An NVIDIA driver on this machine: nvidia-smi on PATH or a /dev/nvidiaN device."""
    return shutil.which("nvidia-smi") is not None or bool(glob.glob("/dev/nvidia[0-9]*"))


def project_pin() -> str:
    """The torch version quantship's own metadata pins (pyproject.toml is the one place)."""
    try:
        requires = metadata.requires("quantship") or ()
    except metadata.PackageNotFoundError:
        requires = ()
    for requirement in requires:
        if match := re.fullmatch(r"torch\s*==\s*([\w.]+)", requirement.strip()):
            return match[1]
    raise InputError("quantship's metadata pins no torch version", "install quantship first: `pip install --no-deps -e .`")


def resolve(pip: list[str], requirement: str, *options: str) -> dict | None:
    """What `pip install <options> <requirement>` would install: {'version', 'url'}, or None.

    A dry run with a report: pip reads the index and the wheel's metadata (PyPI serves it
    apart from the wheel) but downloads nothing big and installs nothing.
    """
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        argv = [*pip, "install", "--dry-run", "--ignore-installed", "--no-deps", "--quiet",
                "--report", str(report), *options, requirement]
        subprocess.run(argv, capture_output=True, text=True, check=False)
        try:
            items = json.loads(report.read_text(encoding="utf-8"))["install"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return None
    found = next((i for i in items if i["metadata"]["name"].lower() == "torch"), None)
    if found is None:
        return None
    return {"version": found["metadata"]["version"], "url": found.get("download_info", {}).get("url")}


def cpu_install_args(pip: list[str], version: str) -> list[str]:
    """pip arguments that install torch `version`'s CPU build."""
    configured = resolve(pip, f"torch=={version}")
    if configured is not None and configured["version"] == f"{version}+cpu":
        return [f"torch=={version}"]
    # Pinned with its local label, so only the CPU index can satisfy it; the rest of
    # torch's dependencies still come from the configured index.
    return ["--extra-index-url", cpu_index_url(), f"torch=={version}+cpu"]


def project_install_args(pip: list[str], version: str) -> list[str]:
    """pip arguments for the project venv's torch: kept if installed, CUDA with a GPU, else CPU."""
    try:
        installed = metadata.version("torch")
    except metadata.PackageNotFoundError:
        installed = None
    if installed is not None and installed.split("+")[0] == version:
        return [f"torch=={installed}"]
    if gpu_present():
        return [f"torch=={version}"]
    return cpu_install_args(pip, version)


def installed_warning() -> str | None:
    """A CUDA build on a machine without a usable GPU works, but is ~4 GB more than needed."""
    import torch

    if "+cpu" in torch.__version__ or torch.cuda.is_available():
        return None
    base = torch.__version__.split("+")[0]
    return (
        f"warning: torch {torch.__version__} is a CUDA build and no GPU is usable here; it runs on the CPU "
        f"but takes ~4 GB more disk. For the CPU build: {Path(sys.executable)} -m pip install "
        f"--force-reinstall --no-deps --extra-index-url {cpu_index_url()} torch=={base}+cpu"
    )


def main(argv: list[str]) -> int:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    if argv == ["pip-args"]:
        print(" ".join(project_install_args(pip, project_pin())))
        return 0
    if argv == ["check"]:
        if warning := installed_warning():
            print(warning, file=sys.stderr)
        return 0
    print("usage: python -m quantship.envs.torch_wheel pip-args|check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except InputError as error:
        print(error.one_line(), file=sys.stderr)
        sys.exit(error.exit_code)
