"""The run directory: the only interface between stages.

Every stage writes its outputs into a private staging folder and renames it into
place when it is complete, with `manifest.json` written last. A reader therefore
sees either a whole stage output or none: Ctrl-C or kill -9 can leave a
`.staging-*` folder behind (ignored by readers, removed by the next attempt), never
a half-written output. A stage whose fingerprint (stage name, parameters, input
hashes) matches the manifest already on disk is skipped unless forced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from quantship import __version__

MANIFEST = "manifest.json"
STAGING_PREFIX = ".staging-"
_HASH_CACHE = ".quantship/hash-cache.json"

# Packages whose versions decide a stage's numbers; recorded in every manifest.
TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "safetensors",
    "tokenizers",
    "gguf",
    "llmcompressor",
    "compressed-tensors",
    "llama_cpp_python",
    "lm_eval",
    "numpy",
)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def tool_versions() -> dict[str, str]:
    versions = {"quantship": __version__, "python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def replace_dir(staging: Path, final: Path) -> None:
    """Move a complete staging folder to `final`, replacing an older output.

    The old output is renamed aside first, so at every instant `final` is either
    the complete old output, absent, or the complete new one.
    """
    final = Path(final)
    old = None
    if final.exists():
        old = final.with_name(f"{STAGING_PREFIX}old-{final.name}-{os.getpid()}")
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class HashCache:
    """sha256 of large files, reused while (size, mtime) are unchanged.

    Hashing a 140 GB checkpoint takes minutes; resumable runs would otherwise pay
    that on every rerun.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.entries: dict[str, dict[str, Any]] = read_json(self.path)
        except (FileNotFoundError, json.JSONDecodeError):
            self.entries = {}

    def sha256(self, file: Path) -> str:
        file = Path(file).resolve()
        stat = file.stat()
        key = str(file)
        entry = self.entries.get(key)
        if entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns:
            return entry["sha256"]
        digest = sha256_file(file)
        self.entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
        atomic_write_json(self.path, self.entries)
        return digest


class PeakMemory:
    """Samples this process's resident memory in a thread to report a stage's peak."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._process = psutil.Process()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self.peak_bytes = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)


@dataclass
class StageRun:
    """A stage in progress: where to write, and what goes into its manifest."""

    name: str
    staging: Path
    params: dict[str, Any]
    inputs: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)

    def path(self, relative: str) -> Path:
        target = self.staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


class RunDir:
    """A run directory (`runs/<name>` by default) holding every stage's outputs."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def stage_dir(self, name: str) -> Path:
        """Folder of a stage output; nested names (`variants/w4a16`) are allowed."""
        return self.root / name

    def manifest(self, name: str) -> dict[str, Any] | None:
        """The manifest of a completed stage output, or None when there is none."""
        path = self.stage_dir(name) / MANIFEST
        try:
            return read_json(path)
        except FileNotFoundError:
            return None

    def require(self, name: str, produced_by: str) -> Path:
        """The folder of a completed stage output, or a one-line error naming the fix."""
        from quantship.errors import InputError

        if self.manifest(name) is None:
            raise InputError(
                f"{self.stage_dir(name)} is missing or incomplete",
                f"run `{produced_by} --run-dir {self.root}` first",
            )
        return self.stage_dir(name)

    def hash_cache(self) -> HashCache:
        return HashCache(self.root / _HASH_CACHE)

    def hash_inputs(self, files: Mapping[str, Path]) -> dict[str, str]:
        cache = self.hash_cache()
        return {label: cache.sha256(path) for label, path in sorted(files.items())}

    def is_current(self, name: str, fingerprint: str) -> bool:
        manifest = self.manifest(name)
        return manifest is not None and manifest.get("fingerprint") == fingerprint

    def _clear_stale_staging(self, final: Path) -> None:
        for stale in final.parent.glob(f"{STAGING_PREFIX}{final.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)

    @contextlib.contextmanager
    def stage(
        self, name: str, params: Mapping[str, Any], inputs: Mapping[str, str]
    ) -> Iterator[StageRun]:
        """Run a stage into a staging folder; publish it with its manifest on success.

        On any exception (KeyboardInterrupt included) the staging folder is deleted
        and the previous output, if any, stays as it was.
        """
        final = self.stage_dir(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._clear_stale_staging(final)
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{final.name}-", dir=final.parent))
        run = StageRun(name=name, staging=staging, params=dict(params), inputs=dict(inputs))
        started = time.time()
        try:
            with PeakMemory() as memory:
                yield run
            manifest = {
                "stage": name,
                "fingerprint": stage_fingerprint(name, run.params, run.inputs),
                "status": "complete",
                "params": run.params,
                "inputs": run.inputs,
                "outputs": _output_hashes(staging),
                "tool_versions": tool_versions(),
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                "wall_time_s": round(time.time() - started, 3),
                "peak_rss_bytes": memory.peak_bytes,
                **run.extra,
            }
            atomic_write_json(staging / MANIFEST, manifest)
            replace_dir(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def stage_fingerprint(name: str, params: Mapping[str, Any], inputs: Mapping[str, str]) -> str:
    return sha256_json({"stage": name, "params": params, "inputs": inputs})


def _output_hashes(folder: Path) -> dict[str, dict[str, Any]]:
    outputs = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = file.relative_to(folder).as_posix()
        outputs[rel] = {"bytes": file.stat().st_size, "sha256": sha256_file(file)}
    return outputs
