"""variants.yaml: the committed list of variants a run produces.

Either a YAML list of variants or a mapping with a `variants:` list (the shape the
quantize section of pipeline.yaml takes). Every entry is a VariantSpec; unknown keys
and bad values are errors with the entry's position, not silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from quantship.errors import InputError
from quantship.quantize.spec import VariantSpec


def load_variants(path: Path) -> list[VariantSpec]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"variants file {path} does not exist", "pass the path of a YAML list of variants") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"{path} is not valid YAML{where}", "fix the YAML syntax") from None
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
