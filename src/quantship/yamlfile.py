"""Reading the YAML files users write (pipeline.yaml, variants.yaml), with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from quantship.errors import InputError


def read_yaml(path: Path, kind: str, missing_fix: str) -> Any:
    """The parsed document; a missing file or a syntax error (with its line) is an InputError."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{kind} {path} does not exist", missing_fix) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"{path} is not valid YAML{where}", "fix the YAML syntax") from None
