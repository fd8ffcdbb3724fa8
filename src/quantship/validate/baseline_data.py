"""What the baseline stage stored, loaded once for every variant's comparison."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from quantship.errors import InputError
from quantship.evaluate.perplexity import WindowPlan
from quantship.layout import BASELINE as STAGE
from quantship.layout import BASELINE_JSON, EVAL_TENSORS, REFERENCES_JSON, REFERENCES_TENSORS
from quantship.rundir import RunDir, read_json


@dataclass
class BaselineData:
    folder: Path
    summary: dict[str, Any]  # baseline.json
    fingerprint: str
    plan: WindowPlan
    topk_ids: torch.Tensor  # int32 [P, k]
    topk_logprobs: torch.Tensor  # float16 [P, k]
    target_logprobs: torch.Tensor  # float32 [P]
    references: list[dict[str, Any]]
    reference_topk: dict[str, torch.Tensor]  # "<id>.topk_ids" -> [T, k]
    probes: list[dict[str, Any]]

    @property
    def checkpoint(self) -> Path:
        return Path(self.summary["checkpoint"]["path"])

    @property
    def perplexity(self) -> float:
        return float(self.summary["perplexity"]["value"])

    @property
    def max_context(self) -> int | None:
        return self.summary["checkpoint"].get("max_position_embeddings")


def load_baseline(run_dir: RunDir) -> BaselineData:
    folder = run_dir.require(STAGE, "quantship baseline --model PATH")
    try:
        tensors = load_file(str(folder / EVAL_TENSORS))
        refs = read_json(folder / REFERENCES_JSON)
        ref_tensors = load_file(str(folder / REFERENCES_TENSORS))
        summary = read_json(folder / BASELINE_JSON)
    except (OSError, ValueError, KeyError) as error:
        raise InputError(
            f"the baseline in {folder} is unreadable ({type(error).__name__}: {error})",
            f"rerun `quantship baseline --force --run-dir {run_dir.root}`",
        ) from None
    plan = WindowPlan(tensors["input_ids"].to(torch.int64), tensors["first_target"].to(torch.int64))
    if plan.scored_positions != tensors["topk_ids"].shape[0]:
        raise InputError(f"{folder / EVAL_TENSORS} is inconsistent (positions != top-k rows)", "rerun `quantship baseline --force`")
    return BaselineData(
        folder=folder,
        summary=summary,
        fingerprint=(run_dir.manifest(STAGE) or {}).get("fingerprint", ""),
        plan=plan,
        topk_ids=tensors["topk_ids"],
        topk_logprobs=tensors["topk_logprobs"],
        target_logprobs=tensors["target_logprobs"].float(),
        references=refs["references"],
        reference_topk=ref_tensors,
        probes=refs["probes"],
    )
