"""Text sources: where calibration and evaluation text comes from.

A source is written as one string so it fits a CLI flag and a YAML value:

    builtin:calibration | builtin:evaluation   CPython's pydoc topics, split by document
    text:PATH                                  a plain text file (blank lines separate documents)
    jsonl:PATH#FIELD                           one document per line; FIELD may hold chat messages
    parquet:PATH#COLUMN                        one document per row
    hf:DATASET[@CONFIG]:SPLIT#FIELD            a Hugging Face dataset, when the hub is reachable

A document is either a string or a list of chat messages ({"role", "content"}).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from quantship.errors import InputError

Document = str | list[dict[str, str]]
Kind = Literal["builtin", "text", "jsonl", "parquet", "hf"]
BUILTIN_SPLITS = ("calibration", "evaluation")
# Share of the built-in corpus's documents that form the evaluation split.
BUILTIN_EVAL_PERCENT = 15

_FORMAT_HELP = (
    "use builtin:calibration, builtin:evaluation, text:PATH, jsonl:PATH#FIELD, "
    "parquet:PATH#COLUMN or hf:DATASET[@CONFIG]:SPLIT#FIELD"
)


@dataclass(frozen=True)
class TextSource:
    kind: Kind
    location: str  # split name, file path or dataset name
    field: str | None = None
    config: str | None = None
    split: str | None = None

    @classmethod
    def parse(cls, spec: str) -> TextSource:
        kind, sep, rest = spec.partition(":")
        if not sep or not rest:
            raise InputError(f"text source {spec!r} is not of the form KIND:LOCATION", _FORMAT_HELP)
        rest, _, field = rest.partition("#")
        if kind == "builtin":
            if rest not in BUILTIN_SPLITS:
                raise InputError(f"unknown built-in split {rest!r}", "use builtin:calibration or builtin:evaluation")
            return cls("builtin", rest)
        if kind in ("text", "jsonl", "parquet"):
            if kind != "text" and not field:
                raise InputError(f"text source {spec!r} names no field", f"append the field: {kind}:{rest}#text")
            return cls(kind, rest, field or None)
        if kind == "hf":
            dataset, _, split = rest.rpartition(":")
            if not dataset or not split or not field:
                raise InputError(f"text source {spec!r} is incomplete", "use hf:DATASET[@CONFIG]:SPLIT#FIELD")
            name, _, config = dataset.partition("@")
            return cls("hf", name, field, config or None, split)
        raise InputError(f"unknown text source kind {kind!r} in {spec!r}", _FORMAT_HELP)

    def __str__(self) -> str:
        if self.kind == "builtin":
            return f"builtin:{self.location}"
        if self.kind == "hf":
            dataset = f"{self.location}@{self.config}" if self.config else self.location
            return f"hf:{dataset}:{self.split}#{self.field}"
        return f"{self.kind}:{self.location}" + (f"#{self.field}" if self.field else "")


def builtin_split_of(document: str) -> str:
    """Deterministic split of one document by a hash of its text, never of its order."""
    bucket = int(hashlib.sha256(document.encode("utf-8")).hexdigest(), 16) % 100
    return "evaluation" if bucket < BUILTIN_EVAL_PERCENT else "calibration"


def builtin_documents(split: str) -> list[str]:
    """CPython's pydoc topics (real English technical prose), one split of them.

    Many topics repeat each other (one topic's text often contains another's), so
    documents are deduplicated, split by content hash, and every paragraph of the
    evaluation split is removed from the calibration documents: no evaluated text is
    ever calibrated on.
    """
    from pydoc_data.topics import topics

    unique = sorted({text.strip() for text in topics.values()})
    evaluation = [doc for doc in unique if builtin_split_of(doc) == "evaluation"]
    if split == "evaluation":
        return evaluation
    held_out = {paragraph.strip() for doc in evaluation for paragraph in doc.split("\n\n")}
    calibration = []
    for doc in unique:
        if builtin_split_of(doc) == "calibration":
            kept = [p for p in doc.split("\n\n") if p.strip() not in held_out]
            if kept:
                calibration.append("\n\n".join(kept))
    return calibration


def load_documents(source: TextSource) -> list[Document]:
    """All documents of `source`, in a stable order; empty documents dropped."""
    if source.kind == "builtin":
        documents: list[Document] = list(builtin_documents(source.location))
    elif source.kind == "hf":
        documents = _hf_documents(source)
    else:
        path = Path(source.location)
        if not path.is_file():
            raise InputError(f"text source file {path} does not exist", "check the path in the source spec")
        if source.kind == "text":
            documents = [block.strip() for block in path.read_text(encoding="utf-8").split("\n\n")]
        elif source.kind == "jsonl":
            documents = _jsonl_documents(path, source.field or "text")
        else:
            documents = _parquet_documents(path, source.field or "text")
    documents = [doc for doc in documents if doc]
    if not documents:
        raise InputError(f"text source {source} holds no non-empty document", "point it at a file with text in it")
    return documents


def _checked_value(value: Any, where: str, field: str) -> Document:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]
    raise InputError(
        f"{where}: field {field!r} is neither text nor a list of chat messages",
        "choose the field that holds the text with #FIELD",
    )


def _jsonl_documents(path: Path, field: str) -> list[Document]:
    documents = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path}:{number} is not valid JSON ({error.msg})", "fix or remove that line") from None
            if not isinstance(record, dict) or field not in record:
                raise InputError(f"{path}:{number} has no field {field!r}", f"choose an existing field with jsonl:{path}#FIELD")
            documents.append(_checked_value(record[field], f"{path}:{number}", field))
    return documents


def _parquet_documents(path: Path, column: str) -> list[Document]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=[column])
    except (KeyError, ValueError) as error:
        raise InputError(f"{path} has no column {column!r} ({error})", f"choose an existing column with parquet:{path}#COLUMN") from None
    except OSError as error:
        raise InputError(f"{path} is not a readable Parquet file ({error})", "check the file") from None
    return [_checked_value(value, str(path), column) for value in table.column(column).to_pylist() if value is not None]


def _hf_documents(source: TextSource) -> list[Document]:
    try:
        import datasets

        dataset = datasets.load_dataset(source.location, source.config, split=source.split)
    except Exception as error:  # offline, unknown dataset, bad split: all one message for the user
        raise InputError(
            f"could not load Hugging Face dataset {source.location!r} ({type(error).__name__}: {error})".splitlines()[0],
            "check the name and network access, or use a local text/jsonl/parquet file or builtin:calibration",
        ) from None
    if source.field not in dataset.column_names:
        raise InputError(
            f"dataset {source.location!r} has no field {source.field!r} (fields: {', '.join(dataset.column_names)})",
            "choose one with #FIELD",
        )
    return [_checked_value(v, source.location, source.field) for v in dataset[source.field] if v is not None]
