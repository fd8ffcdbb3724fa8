"""The only reader of the gate's verdicts (`validation/<variant>.json`) and the selection.

A verdict judges one variant, as it was, against one baseline, as it was: it names both
fingerprints. Once the variant is quantized again under the same name, or the baseline is
measured again, the verdict says nothing about what is on disk, so every reader gets it
marked stale instead of trusting its `passed`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantship import layout
from quantship.errors import InputError
from quantship.rundir import RunDir, read_json

VALIDATION_DIR = layout.VALIDATION


def verdict_path(run: RunDir, variant: str) -> Path:
    return run.root / VALIDATION_DIR / f"{variant}.json"


def selection_path(run: RunDir) -> Path:
    return run.root / VALIDATION_DIR / layout.SELECTED


@dataclass(frozen=True)
class Verdict:
    variant: str
    path: Path
    record: dict[str, Any]
    stale: str | None  # why it no longer describes the files on disk; None when current

    @property
    def passed(self) -> bool:
        """Passed, and still about this variant and baseline."""
        return self.record.get("passed") is True and self.stale is None


def load_verdict(run: RunDir, variant: str) -> Verdict | None:
    """The variant's verdict, checked against its current and the baseline's fingerprints; None if absent."""
    path = verdict_path(run, variant)
    try:
        record = read_json(path)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        raise InputError(f"{path} is not a valid verdict", f"run `quantship validate --run-dir {run.root}` again") from None
    if not isinstance(record, dict):
        raise InputError(f"{path} is not a valid verdict", f"run `quantship validate --run-dir {run.root}` again")
    return Verdict(variant, path, record, _staleness(run, variant, record))


def _staleness(run: RunDir, variant: str, record: dict[str, Any]) -> str | None:
    variant_now = (run.manifest(layout.variant(variant)) or {}).get("fingerprint")
    if record.get("variant_fingerprint") != variant_now:
        return (f"it judged variant fingerprint {record.get('variant_fingerprint')}, but the variant is now "
                f"{variant_now} (quantized again since)")
    baseline_then = record.get("baseline_fingerprint")
    baseline_now = (run.manifest(layout.BASELINE) or {}).get("fingerprint")
    if baseline_then is not None and baseline_then != baseline_now:
        return f"it compared with baseline {baseline_then}, but the baseline is now {baseline_now} (measured again since)"
    return None


def load_selection(run: RunDir) -> str:
    """The variant `validate --select` chose, refused when none passed or the variant changed since.

    Whether that variant's verdict still holds is `load_verdict`'s to say (serve's pre-flight asks).
    """
    path = selection_path(run)
    try:
        selection = read_json(path)
    except FileNotFoundError:
        fix = f"run `quantship validate --run-dir {run.root} --select smallest-passing` first"
        raise InputError(f"{path} does not exist", fix) from None
    chosen = selection.get("selected") if isinstance(selection, dict) else None
    if not chosen:
        raise InputError(
            f"no variant passed the gate in {run.root} ({path})",
            "see report.html; serve a variant by name with --force to override",
        )
    judged, current = selection.get("variant_fingerprint"), (run.manifest(layout.variant(chosen)) or {}).get("fingerprint")
    if judged != current:
        raise InputError(
            f"{path} selected {chosen} at fingerprint {judged}, but that variant is now {current}: the selection is stale",
            f"run `quantship validate --run-dir {run.root}` again",
        )
    return chosen
