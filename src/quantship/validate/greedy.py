"""Greedy consistency: regenerate the baseline's reference prompts and find where they part.

At the first divergent step, a variant token the baseline also ranked in its top-k
(and vice versa) is a near-tie flip, harmless; a token outside the other model's top-k
is a regression. The check's number is the share of references that regress.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quantship.options import Thresholds
from quantship.validate.baseline_data import BaselineData
from quantship.validate.gate import CheckResult
from quantship.validate.scorers import Scorer


def compare_generation(base_ids: list[int], base_topk, var_ids: list[int], var_topk) -> dict[str, Any]:
    """Where two greedy paths diverge and whether each token is in the other's top-k."""
    if base_ids == var_ids:
        return {"exact": True, "divergence": None, "regression": False}
    pos = next((i for i, (a, b) in enumerate(zip(base_ids, var_ids, strict=False)) if a != b), min(len(base_ids), len(var_ids)))
    if pos >= len(base_ids) or pos >= len(var_ids):  # one path is a strict prefix: no token to compare
        return {"exact": False, "divergence": pos, "regression": True, "reason": "one generation is a prefix of the other"}
    base_tok, var_tok = base_ids[pos], var_ids[pos]
    var_in_base = var_tok in set(base_topk[pos].tolist())
    base_in_var = base_tok in set(var_topk[pos].tolist())
    return {
        "exact": False,
        "divergence": pos,
        "baseline_token": base_tok,
        "variant_token": var_tok,
        "variant_token_in_baseline_topk": var_in_base,
        "baseline_token_in_variant_topk": base_in_var,
        "regression": not (var_in_base and base_in_var),
    }


def greedy_check(
    scorer: Scorer, baseline: BaselineData, tokenizer, thresholds: Thresholds, on_item: Callable[[int], None]
) -> CheckResult:
    k = int(baseline.summary["topk"]["k"])
    max_new = int(baseline.summary["references"]["max_new_tokens"])
    rows = []
    for ref in baseline.references:
        gen = scorer.generate(ref["id"], ref["prompt_ids"], max_new, k)
        base_topk = baseline.reference_topk[f"{ref['id']}.topk_ids"]
        row = compare_generation(ref["ids"], base_topk, gen.ids, gen.topk_ids)
        row.update(id=ref["id"], baseline_text=ref["text"], variant_text=gen.text)
        if row.get("divergence") is not None:
            pos = row["divergence"]
            row["common_prefix"] = tokenizer.decode(ref["ids"][:pos], skip_special_tokens=True)
        rows.append(row)
        on_item(1)
    if not rows:
        return CheckResult("greedy", None, thresholds.max_greedy_regressions, "<=", error="the baseline has no reference generations")
    divergences = [r["divergence"] for r in rows if r["divergence"] is not None]
    return CheckResult(
        "greedy",
        sum(r["regression"] for r in rows) / len(rows),
        thresholds.max_greedy_regressions,
        "<=",
        unit="share of references diverging outside top-k",
        detail={
            "references": len(rows),
            "exact_match_rate": sum(r["exact"] for r in rows) / len(rows),
            "mean_first_divergence": sum(divergences) / len(divergences) if divergences else None,
            "topk": k,
            "rows": rows,
        },
    )
