"""quantship's own folder for things shared across runs: demo models, server environments.

Every path under it comes from `quantship_home()`, so one variable moves all of it:
`.ci/run` points QUANTSHIP_HOME at a fresh folder under CI=true to prove the builds
from scratch, while users keep one cache across checkouts.
"""

from __future__ import annotations

import os
from pathlib import Path


def quantship_home() -> Path:
    """$QUANTSHIP_HOME (or the older $QUANTSHIP_CACHE), else ~/.cache/quantship; always absolute."""
    root = os.environ.get("QUANTSHIP_HOME") or os.environ.get("QUANTSHIP_CACHE")
    return Path(root).expanduser().absolute() if root else Path.home() / ".cache" / "quantship"
