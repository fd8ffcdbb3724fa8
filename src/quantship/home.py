"""quantship's own folder for things shared across runs: demo models, server environments."""

from __future__ import annotations

import os
from pathlib import Path


def quantship_home() -> Path:
    """$QUANTSHIP_HOME (or the older $QUANTSHIP_CACHE), else ~/.cache/quantship."""
    root = os.environ.get("QUANTSHIP_HOME") or os.environ.get("QUANTSHIP_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "quantship"
