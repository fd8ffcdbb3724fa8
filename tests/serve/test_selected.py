"""`serve --variant selected` serves what `validate --select` chose, and refuses when nothing passed."""

import pytest

from quantship.errors import InputError
from quantship.rundir import atomic_write_json
from quantship.serve.server import resolve_target, selected_variant


def test_selected_variant_reads_the_selection(tmp_path):
    with pytest.raises(InputError, match="--select smallest-passing"):
        selected_variant(tmp_path)
    atomic_write_json(tmp_path / "validation" / "selected.json", {"selected": None, "reason": "none passed"})
    with pytest.raises(InputError, match="no variant passed the gate"):
        selected_variant(tmp_path)
    atomic_write_json(tmp_path / "validation" / "selected.json", {"selected": "q4km-mp2"})
    with pytest.raises(InputError, match="variants/q4km-mp2 is missing"):  # the selection names a variant that is not here
        resolve_target(tmp_path, "selected", None)
