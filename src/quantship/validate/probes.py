"""Known-answer probes: greedy answers must still contain the expected substring.

Compared with the baseline's own pass rate, so a probe the full-precision model already
misses does not count against the variant.
"""

from __future__ import annotations

from collections.abc import Callable

from quantship.evaluate.generation import prompt_ids
from quantship.evaluate.prompts import Prompt
from quantship.options import Thresholds
from quantship.validate.baseline_data import BaselineData
from quantship.validate.gate import CheckResult
from quantship.validate.scorers import Scorer

PROBE_TOKENS = 16  # as the baseline stage generates them


def probe_check(
    scorer: Scorer, baseline: BaselineData, tokenizer, thresholds: Thresholds, on_item: Callable[[int], None]
) -> CheckResult:
    rows = []
    for probe in baseline.probes:
        prompt = Prompt(**probe["prompt"])
        gen = scorer.generate(prompt.id, prompt_ids(tokenizer, prompt), PROBE_TOKENS, 1)
        passed = prompt.expect is not None and prompt.expect.lower() in gen.text.lower()
        rows.append({"id": prompt.id, "expect": prompt.expect, "baseline_passed": probe["passed"], "answer": gen.text, "passed": passed})
        on_item(1)
    if not rows:
        return CheckResult("probes", None, thresholds.max_probe_drop, "<=", error="the baseline has no probes")
    base_rate = sum(r["baseline_passed"] for r in rows) / len(rows)
    rate = sum(r["passed"] for r in rows) / len(rows)
    return CheckResult(
        "probes",
        max(0.0, base_rate - rate),
        thresholds.max_probe_drop,
        "<=",
        unit="drop of the pass rate",
        detail={
            "baseline_rate": base_rate,
            "variant_rate": rate,
            "lost": [r["id"] for r in rows if r["baseline_passed"] and not r["passed"]],
            "rows": rows,
        },
    )
