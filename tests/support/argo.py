"""Argo Rollouts' analysis semantics, to judge the generated AnalysisTemplate without a cluster.

Conditions are evaluated by expr-lang (the Go library Argo Rollouts evaluates them
with), through PyPI's `enchanter-golem`. That binding takes scalar variables only, so
`result.a.b` is renamed `result__a__b` and the JSON flattened to match: member access
is the one thing not exercised in Go; `==`, `>=`, `&&` and the literals are.

`measurement_phase` follows argo-rollouts utils/evaluate (EvaluateResult) and
`run_phase` analysis.assessMetricStatus: failed > failureLimit -> Failed, inconclusive >
inconclusiveLimit (default 0) -> Inconclusive, `count` measurements done -> Successful.
"""

from __future__ import annotations

import re

import pytest

PATH = re.compile(r"\bresult((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def _flatten(value: object, prefix: str = "result") -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}__{key}"))
        return out
    if isinstance(value, bool | int | float | str):
        return {prefix: float(value) if isinstance(value, int) and not isinstance(value, bool) else value}
    return {}


def evaluate(condition: str, result: dict) -> bool:
    try:
        import golem
    except ImportError:
        import os

        if os.environ.get("CI") == "true":
            pytest.fail("enchanter-golem (expr-lang) is missing under CI=true; pip install -e '.[test]'")
        pytest.skip("enchanter-golem (expr-lang) is missing; pip install -e '.[test]'")
    expression = PATH.sub(lambda m: "result" + m.group(1).replace(".", "__"), condition)
    variables = _flatten(result)
    used = {name for name in re.findall(r"\bresult__\w+", expression)}
    missing = used - set(variables)
    assert not missing, f"the condition reads fields the endpoint does not return: {missing}"
    return bool(golem.Engine(variables={k: variables[k] for k in used}).eval(expression, {k: variables[k] for k in used}))


def measurement_phase(metric: dict, result: dict) -> str:
    success_expr, failure_expr = metric.get("successCondition", ""), metric.get("failureCondition", "")
    success = evaluate(success_expr, result) if success_expr else None
    failure = evaluate(failure_expr, result) if failure_expr else None
    if success is None and failure is None:
        return "Successful"
    if failure is None:
        failure = not success
    if success is None:
        success = not failure
    if failure:
        return "Failed"
    return "Successful" if success else "Inconclusive"


def run_phase(metric: dict, phases: list[str]) -> str | None:
    """The AnalysisRun's phase after these measurements, None while it still runs."""
    if phases.count("Failed") > metric.get("failureLimit", 0):
        return "Failed"
    if phases.count("Inconclusive") > metric.get("inconclusiveLimit", 0):
        return "Inconclusive"
    if len(phases) >= metric.get("count", 0):
        return "Successful"
    return None
