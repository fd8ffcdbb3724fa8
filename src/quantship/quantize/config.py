"""variants.yaml: the committed list of variants a run produces.

Either a YAML list of variants or a mapping with a `variants:` list (the shape the
quantize section of pipeline.yaml takes). Every entry is a VariantSpec; unknown keys
and bad values are errors with the entry's position, not silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from quantship.errors import InputError
from quantship.quantize.spec import VariantSpec
from quantship.yamlfile import read_yaml


def load_variants(path: Path) -> list[VariantSpec]:
    data = read_yaml(path, "variants file", "pass the path of a YAML list of variants")
    return parse_variants(data, str(path))


def parse_variants(data: Any, origin: str = "variants") -> list[VariantSpec]:
    if isinstance(data, dict) and set(data) == {"variants"}:
        data = data["variants"]
    if not isinstance(data, list) or not data:
        raise InputError(f"{origin} must hold a non-empty list of variants", "write `- name: ...` entries, or `variants:` with such a list")
    specs = []
    for index, entry in enumerate(data, start=1):
        try:
            specs.append(VariantSpec.model_validate(entry))
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "entry"
            label = entry.get("name") if isinstance(entry, dict) else None
            raise InputError(
                f"{origin}: variant #{index}{f' ({label})' if label else ''}: {field}: {first['msg']}",
                "see docs/quantize.md for the variant fields",
            ) from None
    return specs
