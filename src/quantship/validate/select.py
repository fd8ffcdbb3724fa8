"""`--select smallest-passing`: pick the variant that ships and say why, for `serve`."""

from __future__ import annotations

import time
from typing import Any

from quantship.rundir import RunDir, atomic_write_json
from quantship.validate.verdicts import VALIDATION_DIR, selection_path


def select_variant(run_dir: RunDir, results: list[dict[str, Any]], policy: str) -> dict[str, Any]:
    """The passing variant with the fewest bits per weight (size breaks ties); none when none passed."""
    passing = [r for r in results if r.get("passed") is True and r.get("bits_per_weight") is not None]
    passing.sort(key=lambda r: (r["bits_per_weight"], r.get("size_bytes") or 0, r["variant"]))
    chosen = passing[0] if passing else None
    candidates = [
        {"variant": r["variant"], "passed": r.get("passed") is True, "bits_per_weight": r.get("bits_per_weight"),
         "failed_checks": r.get("failed_checks", [])}
        for r in results
    ]
    if chosen is None:
        reason = f"none of the {len(results)} validated variants passed the gate"
    else:
        reason = (
            f"{chosen['variant']} passed every check with the fewest bits per weight "
            f"({chosen['bits_per_weight']:.3f}) among {len(passing)} passing variant(s)"
        )
    selection = {
        "policy": policy,
        "selected": chosen["variant"] if chosen else None,
        "reason": reason,
        "variant_fingerprint": chosen.get("variant_fingerprint") if chosen else None,
        "validation": f"{VALIDATION_DIR}/{chosen['variant']}.json" if chosen else None,
        "candidates": candidates,
        "selected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(selection_path(run_dir), selection)
    return selection
