"""The pinned llama.cpp toolchain: converter, quantizer, imatrix and server from one build.

The PyPI wheel of `llama-cpp-python` holds neither the HF -> GGUF converter nor the
C++ tools, but its sdist vendors the whole llama.cpp tree at a known commit. So the
setup downloads that sdist once, builds llama.cpp from it ONCE with CMake (Release,
CPU, -march=native, shared libraries), and installs the Python bindings with their
own llama.cpp build switched off (`-DLLAMA_BUILD=OFF`), pointing them at the shared
libraries of that same build. Converter, quantizer, server and bindings therefore
come from one commit. Everything lives in `$QUANTSHIP_HOME/envs/llama.cpp-<version>`;
each step is idempotent and the stamp `toolchain.json` is written last, so an
interrupted setup resumes where it stopped (CMake/Ninja rebuild only what is missing).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from quantship.envs import system_packages
from quantship.errors import InputError, NotAvailable
from quantship.home import quantship_home
from quantship.rundir import atomic_write_json, read_json

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
PACKAGE = "llama-cpp-python"
STAMP = "toolchain.json"
BINARIES = ("llama-server", "llama-quantize", "llama-imatrix")
# Measured on a 2-core machine shared with other jobs (docs/gguf.md): download ~1 min,
# build 38 min at load ~9, 6.5 min on an idle machine, bindings ~1 min; 350 MB on disk.
EXPECTED_MINUTES = 30
EXPECTED_DISK_GB = 0.4
SUMMARY = (  # what `quantship setup` says before it starts
    "llama.cpp tools (converter, quantizer, imatrix, llama-server); first build ~7 min on 2 idle cores (30-40 under load), "
    "later ~1 min"
)
_CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    # The server's web UI would be fetched from the Hugging Face hub at build time.
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
)
# -march=native turns on AMX where the CPU has it (Sapphire Rapids and later), and this
# llama.cpp's AMX kernels die with SIGILL on such machines (an invalid tile config:
# ggml-org/llama.cpp#26954, open). GCC honours an explicit -mno-* over -march=native
# whatever the order, so these keep every other native instruction set.
_NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
# The bindings' own CMake project, told not to compile llama.cpp a second time.
_BINDINGS_CMAKE_ARGS = "-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF"


@dataclass(frozen=True)
class Toolchain:
    """Paths of one complete, verified build; read from the stamp by `load()`."""

    version: str  # llama-cpp-python release whose vendored llama.cpp was built
    llama_cpp_build: str  # what `llama-server --version` reports (build number, commit)
    root: Path
    source_dir: Path  # vendor/llama.cpp inside the unpacked sdist
    converter: Path  # convert_hf_to_gguf.py
    gguf_py: Path  # the gguf-py package the converter was written against
    llama_server: Path
    llama_quantize: Path
    llama_imatrix: Path
    lib_dir: Path  # libllama.so and libggml*.so, shared with the Python bindings
    architectures: tuple[str, ...]  # HF architectures the converter accepts

    def converter_env(self) -> dict[str, str]:
        """Environment for the converter: the vendored gguf-py first on the path.

        The converter inserts gguf-py itself unless NO_LOCAL_GGUF is set; clearing that
        variable and naming the folder on PYTHONPATH makes the choice explicit.
        """
        env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.gguf_py), env.get("PYTHONPATH")]))
        return env



def env_dir() -> Path:
    return quantship_home() / "envs" / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}"


def log_path() -> Path:
    return env_dir() / "setup.log"


def _sdist_name() -> str:
    return f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}"


def _source_dir(root: Path) -> Path:
    return root / "src" / _sdist_name() / "vendor" / "llama.cpp"


def _build_dir(root: Path) -> Path:
    return root / "build"


def cmake_flags() -> list[str]:
    """The configure flags of this machine's build; a stamp with other flags means a rebuild."""
    flags = list(_CMAKE_FLAGS)
    if platform.machine().lower() in ("x86_64", "amd64"):
        flags += [f"-DCMAKE_C_FLAGS={_NO_AMX}", f"-DCMAKE_CXX_FLAGS={_NO_AMX}"]
    return flags


def status() -> dict:
    """Whether the toolchain is ready and where its parts are (never builds anything)."""
    root = env_dir()
    try:
        stamp = read_json(root / STAMP)
    except (FileNotFoundError, json.JSONDecodeError):
        stamp = None
    missing = []
    if stamp is not None:
        missing = [name for name, path in stamp["paths"].items() if not Path(path).exists()]
        wanted = cmake_flags()
        if stamp.get("cmake_flags") != wanted:
            missing.append(f"a build with the current configure flags ({' '.join(wanted)})")
    # The build is shared by every environment; the bindings live in this interpreter's
    # site-packages, so a new venv (a fresh clone, CI) needs them installed again.
    bindings_ready = (
        _installed_bindings_version() == LLAMA_CPP_PYTHON_VERSION and (_bindings_lib_dir() / "libllama.so").exists()
    )
    if stamp is not None and not bindings_ready:
        missing.append(_missing_bindings())
    return {
        "name": "llama.cpp",
        "version": LLAMA_CPP_PYTHON_VERSION,
        "ready": stamp is not None and not missing,
        "path": str(root),
        "log": str(log_path()),
        "missing": missing,
        "bindings": _installed_bindings_version(),
        "stamp": stamp,
        "setup_command": "quantship setup llama.cpp",
    }


def _missing_bindings() -> str:
    return f"{PACKAGE} bindings in {sys.prefix}"


def load() -> Toolchain:
    """The built toolchain, or a one-line error naming the setup command."""
    state = status()
    if not state["ready"]:
        detail = f" (missing: {', '.join(state['missing'])})" if state["missing"] else ""
        raise NotAvailable(
            f"the llama.cpp toolchain is not set up in {state['path']}{detail}",
            f"run `quantship setup llama.cpp` (about {EXPECTED_MINUTES} min on 2 cores, {EXPECTED_DISK_GB} GB)",
        )
    stamp = state["stamp"]
    paths = {name: Path(path) for name, path in stamp["paths"].items()}
    return Toolchain(
        version=stamp["version"],
        llama_cpp_build=stamp["llama_cpp_build"],
        architectures=tuple(stamp["architectures"]),
        **paths,
    )


def setup(console: Console, force: bool = False) -> Toolchain:
    """Download, build and install the pinned toolchain (idempotent, resumable)."""
    root = env_dir()
    state = status()
    if state["ready"] and not force:
        console.print(f"llama.cpp toolchain {LLAMA_CPP_PYTHON_VERSION} is already set up in {root}")
        return load()
    # Before anything starts: the bindings' own CMake project needs the compilers too.
    system_packages.require("build", "building llama.cpp")
    if not force and state["stamp"] is not None and state["missing"] == [_missing_bindings()]:
        # The shared build is complete; only this interpreter lacks the bindings. The stamp
        # stays: other environments are using the build right now.
        console.print(f"llama.cpp build ready in {root}; installing its Python bindings into {sys.prefix}")
        with open(log_path(), "a", encoding="utf-8") as log:
            runner = _Runner(console, log, time.monotonic())
            _install_bindings(_download(root, runner), _build_dir(root) / "bin", runner)
        return load()
    root.mkdir(parents=True, exist_ok=True)
    (root / STAMP).unlink(missing_ok=True)
    if force:
        shutil.rmtree(_build_dir(root), ignore_errors=True)
    console.print(
        f"setting up the llama.cpp toolchain ({PACKAGE} {LLAMA_CPP_PYTHON_VERSION}) in {root}: "
        f"about {EXPECTED_MINUTES} min on 2 cores and {EXPECTED_DISK_GB} GB of disk; log: {log_path()}"
    )
    started = time.monotonic()
    with open(log_path(), "a", encoding="utf-8") as log:
        runner = _Runner(console, log, started)
        sdist = _download(root, runner)
        source = _unpack(root, sdist, runner)
        build = _build_dir(root)
        runner.run("configure llama.cpp (cmake)", _configure_argv(source, build))
        runner.build("build llama.cpp", build)
        _install_bindings(sdist, build / "bin", runner)
        toolchain = _verify(root, source, build, runner)
    atomic_write_json(
        root / STAMP,
        {
            "version": toolchain.version,
            "llama_cpp_build": toolchain.llama_cpp_build,
            "architectures": list(toolchain.architectures),
            "paths": {k: str(v) for k, v in asdict(toolchain).items() if isinstance(v, Path)},
            "cmake_flags": cmake_flags(),
            "setup_seconds": round(time.monotonic() - started, 1),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    console.print(f"llama.cpp toolchain ready in {root} ({_elapsed(started)})")
    return toolchain


class _Runner:
    """Runs setup steps as subprocesses, logging everything, one status line each."""

    def __init__(self, console: Console, log, started: float):
        self.console = console
        self.log = log
        self.started = started

    def _header(self, argv: list[str]) -> None:
        self.log.write(f"\n$ {' '.join(argv)}\n")
        self.log.flush()

    def _fail(self, label: str, code: int) -> None:
        raise InputError(
            f"llama.cpp toolchain setup failed at: {label} (exit {code})",
            f"see {log_path()}; fix the cause and rerun `quantship setup llama.cpp`",
        )

    def run(self, label: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self._header(argv)
        with self.console.status(f"{label} ({_elapsed(self.started)})"):
            done = subprocess.run(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env, check=False)
        if done.returncode != 0:
            self._fail(label, done.returncode)
        self.console.print(f"[green]done[/green] {label} ({_elapsed(self.started)})")

    def output(self, argv: list[str], env: dict[str, str] | None = None) -> str:
        self._header(argv)
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        self.log.write(done.stdout + done.stderr)
        if done.returncode != 0:
            self._fail(" ".join(Path(a).name for a in argv[:2]), done.returncode)
        return done.stdout + done.stderr

    def build(self, label: str, build: Path) -> None:
        """`cmake --build` with a progress bar fed by Ninja's/Make's `[n/N]` lines."""
        argv = ["cmake", "--build", str(build), "--config", "Release", "-j", str(os.cpu_count() or 1),
                "--target", *BINARIES, "llama"]
        self._header(argv)
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.console) as progress:
            task = progress.add_task(label, total=None)
            with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
                for line in proc.stdout:
                    self.log.write(line)
                    step = _parse_build_step(line)
                    if step:
                        progress.update(task, completed=step[0], total=step[1])
            if proc.returncode == 0:
                progress.update(task, completed=progress.tasks[0].total or 1, total=progress.tasks[0].total or 1)
        self.log.flush()
        if proc.returncode != 0:
            self._fail(label, proc.returncode)
        self.console.print(f"[green]done[/green] {label} ({_elapsed(self.started)})")


def _parse_build_step(line: str) -> tuple[int, int] | None:
    """(done, total) from a Ninja `[12/218]` line or a Make `[ 45%]` line."""
    if match := re.match(r"\[(\d+)/(\d+)\]", line):
        return int(match[1]), int(match[2])
    if match := re.match(r"\[\s*(\d+)%\]", line):
        return int(match[1]), 100
    return None


def _configure_argv(source: Path, build: Path) -> list[str]:
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    return ["cmake", "-S", str(source), "-B", str(build), *generator, *cmake_flags()]


def _download(root: Path, runner: _Runner) -> Path:
    """The pinned sdist, fetched with pip (so the index's hash is checked) once."""
    target = root / "download" / f"{_sdist_name()}.tar.gz"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        runner.run(
            f"download the {PACKAGE} {LLAMA_CPP_PYTHON_VERSION} sdist",
            [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
             "--no-binary", ":all:", f"{PACKAGE}=={LLAMA_CPP_PYTHON_VERSION}", "-d", tmp],
        )
        found = list(Path(tmp).glob("*.tar.gz"))
        if len(found) != 1:
            raise InputError(f"pip download left {len(found)} sdists, expected one", f"see {log_path()}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(found[0], target)
    return target


def _unpack(root: Path, sdist: Path, runner: _Runner) -> Path:
    """Unpack into a temporary folder and rename, so a half-unpacked tree never counts."""
    source = _source_dir(root)
    if (source / "convert_hf_to_gguf.py").exists():
        return source
    final = root / "src"
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        with runner.console.status("unpack the sdist"), tarfile.open(sdist) as archive:
            archive.extractall(tmp, filter="data")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        Path(tmp).mkdir()  # TemporaryDirectory's cleanup expects it
    return source


def _bindings_lib_dir() -> Path:
    return Path(sysconfig.get_paths()["purelib"]) / "llama_cpp" / "lib"


def _install_bindings(sdist: Path, built_libs: Path, runner: _Runner) -> None:
    """pip-install the Python bindings without their own compile; link the built libs.

    `LLAMA_BUILD=OFF` makes the wheel pure Python; its loader looks for libllama.so in
    llama_cpp/lib, where symlinks to this build's libraries go (libggml* are found
    through the libraries' build RUNPATH). Their dependencies (numpy, jinja2,
    diskcache, typing-extensions) never include torch.
    """
    if _installed_bindings_version() != LLAMA_CPP_PYTHON_VERSION or not (_bindings_lib_dir() / "libllama.so").exists():
        env = {**os.environ, "CMAKE_ARGS": _BINDINGS_CMAKE_ARGS}
        runner.run(
            f"install the {PACKAGE} bindings (no second llama.cpp compile)",
            [sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
             "--no-cache-dir", str(sdist), "diskcache>=5.6.1"],
            env=env,
        )
    lib_dir = _bindings_lib_dir()
    lib_dir.mkdir(parents=True, exist_ok=True)
    for library in sorted(built_libs.glob("lib*.so*")):
        link = lib_dir / library.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(library)


def _installed_bindings_version() -> str | None:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def _verify(root: Path, source: Path, build: Path, runner: _Runner) -> Toolchain:
    """Every part runs: the binaries print their version, the bindings import, the converter lists models."""
    bin_dir = build / "bin"
    for name in BINARIES:
        if not (bin_dir / name).exists():
            raise InputError(
                f"the build did not produce {bin_dir / name}",
                f"see {log_path()} and rerun `quantship setup llama.cpp --force`",
            )
    version_text = runner.output([str(bin_dir / "llama-server"), "--version"])
    build_line = next((line for line in version_text.splitlines() if line.startswith("version:")), "version: unknown")
    runner.output([sys.executable, "-c", "import llama_cpp; assert llama_cpp.llama_supports_mmap() is not None"])
    toolchain = Toolchain(
        version=LLAMA_CPP_PYTHON_VERSION,
        llama_cpp_build=build_line.removeprefix("version:").strip(),
        root=root,
        source_dir=source,
        converter=source / "convert_hf_to_gguf.py",
        gguf_py=source / "gguf-py",
        llama_server=bin_dir / "llama-server",
        llama_quantize=bin_dir / "llama-quantize",
        llama_imatrix=bin_dir / "llama-imatrix",
        lib_dir=bin_dir,
        architectures=(),
    )
    listing = runner.output([sys.executable, str(toolchain.converter), "--print-supported-models"], env=toolchain.converter_env())
    text_section = listing.split("TEXT models:", 1)[-1].split("MMPROJ models:", 1)[0]
    architectures = tuple(sorted(set(re.findall(r"^\s*-\s*(\w+)\s*$", text_section, flags=re.M))))
    if "LlamaForCausalLM" not in architectures:
        raise InputError("the converter's list of supported models is empty or unreadable", f"see {log_path()}")
    return Toolchain(**{**asdict(toolchain), "architectures": architectures})


def _elapsed(started: float) -> str:
    seconds = int(time.monotonic() - started)
    return f"{seconds // 60}m{seconds % 60:02d}s"
