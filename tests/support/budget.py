"""Time budgets for slow fixtures, so that their setup does not race one test's timeout.

pytest-timeout's per-test `timeout` covers the test's fixture setup. A module or session
fixture that quantizes or starts a server is set up inside whichever test first asks for
it, which would then have to fit both in one budget (and `-k` changes which test that is).
A fixture decorated with `setup_budget(seconds)` adds its seconds to the timeout of the
first selected test that uses it in each scope; every other test keeps the plain timeout.

    @pytest.fixture(scope="module")
    @setup_budget(1200)
    def demo_run(...): ...
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

BUDGET_ATTRIBUTE = "_setup_budget_s"


def setup_budget(seconds: float) -> Callable:
    """Mark a fixture function as needing `seconds` to set up (apply under @pytest.fixture)."""

    def mark(function: Callable) -> Callable:
        setattr(function, BUDGET_ATTRIBUTE, float(seconds))
        return function

    return mark


def _scope_key(scope: str, item: pytest.Item) -> object:
    """What one setup of a fixture of this scope is shared by."""
    if scope == "session":
        return None
    if scope == "package":
        return item.path.parent
    if scope == "module":
        return item.path
    if scope == "class":
        return (item.path, getattr(item, "cls", None))
    return item.nodeid


def base_timeout(config: pytest.Config) -> float:
    """The per-test timeout in force (command line over ini), 0 when disabled."""
    value = config.getoption("timeout", None)
    if value is None:
        value = config.getini("timeout")
    return float(value or 0)


def extra_seconds(items: list[pytest.Item]) -> dict[str, float]:
    """nodeid -> seconds of fixture setup its test is the first in its scope to pay for."""
    seen: set[tuple[int, object]] = set()
    extra: dict[str, float] = {}
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        for name in item.fixturenames:
            for fixturedef in info.name2fixturedefs.get(name, ()):
                budget = getattr(fixturedef.func, BUDGET_ATTRIBUTE, None)
                key = (id(fixturedef), _scope_key(fixturedef.scope, item))
                if budget is None or key in seen:
                    continue
                seen.add(key)
                extra[item.nodeid] = extra.get(item.nodeid, 0.0) + budget
    return extra


def apply_setup_budgets(items: list[pytest.Item], config: pytest.Config) -> None:
    """Give each test that sets up a budgeted fixture its own timeout plus the budget."""
    base = base_timeout(config)
    if base <= 0:
        return
    extra = extra_seconds(items)
    for item in items:
        if item.nodeid in extra:
            marker = item.get_closest_marker("timeout")
            own = float(marker.args[0]) if marker is not None and marker.args else base
            item.add_marker(pytest.mark.timeout(own + extra[item.nodeid]))
