"""Long-context slice: perplexity on tokens that see more context than the baseline's windows.

Windows as long as the model supports (or a cap) are scored only at positions past the
baseline's window length, for the baseline checkpoint and the variant alike; K/V or
RoPE damage that short windows hide shows up here. The baseline's long slice is not
part of the baseline stage, so validate computes it once and caches it in
validation/baseline-long.json, keyed by the baseline fingerprint and the slice shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quantship.data.sources import TextSource, load_documents
from quantship.data.tokens import encode_document, separator_id, token_stream
from quantship.errors import InputError
from quantship.evaluate.perplexity import LogitsFn, WindowPlan, hf_logits_fn, plan_windows, score_windows
from quantship.models.loading import load_causal_lm
from quantship.options import Thresholds
from quantship.rundir import atomic_write_json, read_json, sha256_json
from quantship.validate.baseline_data import BaselineData
from quantship.validate.gate import CheckResult

CACHE = "baseline-long.json"


def long_plan(baseline: BaselineData, tokenizer, cap: int, windows: int) -> WindowPlan:
    """Windows of min(cap, model context) tokens over the baseline's evaluation text."""
    documents = load_documents(TextSource.parse(baseline.summary["eval"]["source"]))
    stream = token_stream([encode_document(tokenizer, d, chat=False) for d in documents], separator_id(tokenizer))
    short = int(baseline.plan.input_ids.shape[1])
    length = min(cap, baseline.max_context or cap, len(stream))
    if length <= short:
        raise InputError(
            f"no long-context slice: windows can be at most {length} tokens, not longer than the baseline's {short}",
            "raise --long-window, use more evaluation text, or a baseline with a shorter --window",
        )
    plan = plan_windows(stream, length, length, windows)
    plan.first_target[:] = short  # score only targets with more context than any baseline window had
    return plan


def long_perplexity(logits_fn: LogitsFn, plan: WindowPlan, on_batch: Callable[[int], None] | None = None) -> float:
    return score_windows(logits_fn, plan, batch_size=1, topk=0, on_batch=on_batch).perplexity


def baseline_long_perplexity(baseline: BaselineData, plan: WindowPlan, cache_dir: Path, on_batch) -> float:
    key = sha256_json({"baseline": baseline.fingerprint, "ids": plan.input_ids.tolist(), "first": plan.first_target.tolist()})
    cache = cache_dir / CACHE
    try:
        cached = read_json(cache)
        if cached.get("key") == key:
            return float(cached["perplexity"])
    except (FileNotFoundError, ValueError):
        pass
    eval_ = baseline.summary["eval"]
    model = load_causal_lm(baseline.checkpoint, eval_["dtype"], eval_["device"])
    value = long_perplexity(hf_logits_fn(model), plan, on_batch)
    del model
    atomic_write_json(
        cache, {"key": key, "perplexity": value, "window": int(plan.input_ids.shape[1]), "windows": int(plan.input_ids.shape[0])}
    )
    return value


def long_context_check(
    variant_ppl: float, baseline_ppl: float, short_delta: float | None, plan: WindowPlan, thresholds: Thresholds
) -> CheckResult:
    delta = variant_ppl / baseline_ppl - 1 if math.isfinite(variant_ppl) else math.inf
    detail: dict[str, Any] = {
        "window": int(plan.input_ids.shape[1]),
        "windows": int(plan.input_ids.shape[0]),
        "scored_from_position": int(plan.first_target[0]),
        "baseline_perplexity": baseline_ppl,
        "variant_perplexity": variant_ppl,
        "short_window_delta": short_delta,
        "long_minus_short_delta": None if short_delta is None else delta - short_delta,
    }
    return CheckResult("long_context", delta, thresholds.max_long_context_delta, "<=", unit="relative perplexity change", detail=detail)
