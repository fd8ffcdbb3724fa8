"""Read a written GGUF file back: tensor types, counts and measured bits per weight.

The manifest records what is in the file, not what was asked for: llama.cpp may
choose other types per tensor (K-quant mixtures, fallbacks for odd row lengths).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from gguf import GGUFReader

from quantship.errors import InputError
from quantship.rundir import atomic_write_json, read_json

SUMMARY_SUFFIX = ".summary.json"  # beside a cached GGUF: remembered_summary


@dataclass(frozen=True)
class GGUFSummary:
    architecture: str
    block_count: int | None
    tensor_types: dict[str, str]  # tensor name -> ggml type name
    tensor_shapes: dict[str, list[int]]  # GGUF order: ne[0] (row length) first
    total_bytes: int
    total_elements: int
    vocab: dict[str, str | None]  # tokenizer.ggml.model / .pre: what llama.cpp tokenizes with

    @property
    def tensor_count(self) -> int:
        return len(self.tensor_types)

    @property
    def bits_per_weight(self) -> float:
        """Bits per parameter over every tensor, from the bytes actually written."""
        return self.total_bytes * 8 / self.total_elements

    def histogram(self) -> dict[str, int]:
        return dict(sorted(Counter(self.tensor_types.values()).items()))

    def matrices(self) -> list[str]:
        """Tensors with two or more dimensions: the ones a quantizer may change."""
        return [name for name, shape in self.tensor_shapes.items() if len(shape) >= 2]


def read_summary(path: Path) -> GGUFSummary:
    """Parse `path` with the `gguf` package; a file it cannot read is an error."""
    return summarise(open_reader(path))


def open_reader(path: Path) -> GGUFReader:
    try:
        return GGUFReader(path)
    except (ValueError, OSError) as error:
        raise InputError(f"{path} is not a readable GGUF file ({error})", "delete it and quantize again") from None


def summarise(reader: GGUFReader) -> GGUFSummary:
    architecture = _field(reader, "general.architecture") or "unknown"
    block_count = _field(reader, f"{architecture}.block_count")
    types, shapes, total_bytes, total_elements = {}, {}, 0, 0
    for tensor in reader.tensors:
        types[tensor.name] = tensor.tensor_type.name
        shapes[tensor.name] = [int(x) for x in tensor.shape]
        total_bytes += int(tensor.n_bytes)
        total_elements += int(tensor.n_elements)
    vocab = {"model": _field(reader, "tokenizer.ggml.model"), "pre": _field(reader, "tokenizer.ggml.pre")}
    return GGUFSummary(architecture, block_count, types, shapes, total_bytes, total_elements, vocab)


def remembered_summary(path: Path, reader: Callable[[], GGUFReader] | None = None) -> GGUFSummary:
    """The summary of a GGUF file quantship wrote into a run's cache, kept beside it as JSON.

    Parsing costs seconds (the reader builds an array view per vocabulary entry), and a run
    reads its float conversion once per build and its candidate files on every rerun: each
    is parsed once, and a rerun opens no reader at all. `reader` gives the one the caller
    opens anyway, so a first read parses the file once. A file replaced since (another size
    or mtime) is parsed again.
    """
    stat = path.stat()
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    sidecar = path.with_name(path.name + SUMMARY_SUFFIX)
    if sidecar.is_file():
        kept = read_json(sidecar)
        if kept.get("file") == stamp:
            return GGUFSummary(**kept["summary"])
    summary = summarise(reader()) if reader is not None else read_summary(path)
    atomic_write_json(sidecar, {"file": stamp, "summary": asdict(summary)})
    return summary


def _field(reader: GGUFReader, key: str):
    field = reader.fields.get(key)
    return field.contents() if field is not None else None


# llama.cpp's src/llama-quant.cpp, tensor_type_fallback():
# "warning: <name> - ncols <n> not divisible by <b> (required for type <t>) [(WARNING: ...)] -> falling back to <u>"
_FALLBACK = re.compile(
    r"warning:\s+(?P<tensor>\S+)\s+-\s+ncols\s+(?P<ncols>\d+)\s+not divisible by\s+(?P<block>\d+)\s+"
    r"\(required for type\s+(?P<requested>\S+)\)\s*(?:\(WARNING:[^)]*\)\s*)?->\s*falling back to\s+(?P<used>\S+)"
)


def parse_fallbacks(log: str) -> list[dict]:
    """The tensors llama-quantize moved to another type because their rows did not fit."""
    return [
        {
            "tensor": m["tensor"],
            "row_length": int(m["ncols"]),
            "block": int(m["block"]),
            "requested": m["requested"].upper(),
            "used": m["used"].upper(),
        }
        for m in _FALLBACK.finditer(log)
    ]
