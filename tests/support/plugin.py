"""The suite's hooks, imported by tests/conftest.py (and usable as `-p tests.support.plugin`).

`gpu` tests skip without CUDA, under CI as well (CI has no GPU); `requires(...)` marks skip
locally and fail under CI (tests/support/requires.py); budgeted fixtures extend the timeout
of the test that sets them up (tests/support/budget.py).
"""

from __future__ import annotations

import pytest

from tests.support.budget import apply_setup_budgets
from tests.support.requires import check


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") is not None:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)")
    for marker in item.iter_markers("requires"):
        for name in marker.args:
            check(name)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # trylast: after -k/-m deselection and pytest's fixture-scope reordering, so "first" is real.
    apply_setup_budgets(items, config)
