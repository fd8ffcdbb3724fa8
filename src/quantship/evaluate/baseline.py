"""`baseline`: verify the checkpoint, then record what every variant is compared with.

Outputs (run_dir/baseline/):
  baseline.json           model facts, perplexity, probe rate, generation summary
  eval.safetensors        the evaluation windows and, per scored position, the
                          baseline's top-k ids + logprobs and the target's logprob
  references.json         greedy reference generations and probe answers
  references.safetensors  the baseline's top-k along each greedy path
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from safetensors.torch import save_file

from quantship.data.sources import TextSource, load_documents
from quantship.data.tokens import encode_document, separator_id, token_stream
from quantship.evaluate.generation import Generation, greedy_generate, probe_passed
from quantship.evaluate.perplexity import hf_logits_fn, plan_windows, score_windows
from quantship.evaluate.prompts import KNOWN_ANSWER_PROBES, REFERENCE_PROMPTS, Prompt
from quantship.layout import BASELINE, BASELINE_JSON, EVAL_TENSORS, REFERENCES_JSON, REFERENCES_TENSORS
from quantship.models.checkpoint import checkpoint_files, inspect_checkpoint
from quantship.models.loading import default_device, default_eval_dtype, load_causal_lm, load_tokenizer
from quantship.options import BaselineOptions
from quantship.progress import progress_bar
from quantship.rundir import RunDir, atomic_write_json, read_json, sha256_json, stage_fingerprint


def run_baseline(
    model_path: Path, run_dir: RunDir, options: BaselineOptions, console: Console, force: bool = False
) -> tuple[dict[str, Any], bool]:
    """Measure the baseline; returns (baseline.json contents, whether it was skipped)."""
    info = inspect_checkpoint(model_path, allow_pickle=options.allow_pickle)
    for warning in info.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    source = TextSource.parse(options.eval_source)
    documents = load_documents(source)
    device = options.device or default_device()
    dtype = options.dtype or default_eval_dtype(device)
    params = {**options.model_dump(), "device": device, "dtype": dtype}
    with console.status("hashing checkpoint files"):
        inputs = run_dir.hash_inputs({f"model/{k}": v for k, v in checkpoint_files(model_path).items()})
    inputs["eval_text"] = sha256_json(documents)
    if not force and run_dir.is_current(BASELINE, stage_fingerprint(BASELINE, params, inputs)):
        return read_json(run_dir.stage_dir(BASELINE) / BASELINE_JSON), True

    with run_dir.stage(BASELINE, params, inputs) as stage:
        with console.status(f"loading {info.architecture} ({dtype}, {device})"):
            tokenizer = load_tokenizer(model_path)
            model = load_causal_lm(model_path, dtype, device, options.allow_pickle)
        stream = token_stream([encode_document(tokenizer, d, chat=False) for d in documents], separator_id(tokenizer))
        plan = plan_windows(stream, options.window, options.stride, options.max_windows)
        with progress_bar("perplexity", plan.input_ids.numel(), "tok", console) as advance:
            scored = score_windows(hf_logits_fn(model), plan, options.batch_size, options.topk, advance)
        save_file(
            {
                "input_ids": plan.input_ids.to(torch.int32).contiguous(),
                "first_target": plan.first_target.to(torch.int32),
                "topk_ids": scored.topk_ids,
                "topk_logprobs": scored.topk_logprobs,
                "target_logprobs": scored.target_logprobs,
            },
            str(stage.path(EVAL_TENSORS)),
        )
        references, probes = _generate_references(model, tokenizer, options, console)
        _write_references(stage.path(REFERENCES_JSON), stage.path(REFERENCES_TENSORS), references, probes)
        probe_passes = sum(probe_passed(gen, prompt) for prompt, gen in probes)
        baseline = {
            "checkpoint": info.to_json(),
            "eval": {"dtype": dtype, "device": device, "source": str(source), "documents": len(documents)},
            "perplexity": {
                "value": scored.perplexity,
                "nll_mean": scored.nll_sum / scored.tokens,
                "tokens_scored": scored.tokens,
                "windows": int(plan.input_ids.shape[0]),
                "window": options.window,
                "stride": options.stride,
                "stream_tokens": len(stream),
                "seconds": round(scored.seconds, 3),
                "tokens_per_s": round(plan.input_ids.numel() / scored.seconds, 1),
            },
            "topk": {"k": options.topk, "file": EVAL_TENSORS},
            "references": {
                "count": len(references),
                "max_new_tokens": options.max_new_tokens,
                "file": REFERENCES_JSON,
            },
            "probes": {"passed": probe_passes, "total": len(probes), "rate": probe_passes / len(probes)},
        }
        atomic_write_json(stage.path(BASELINE_JSON), baseline)
        stage.extra["model"] = {"path": info.path, "architecture": info.architecture}
    return baseline, False


def _generate_references(model, tokenizer, options: BaselineOptions, console: Console):
    has_template = bool(getattr(tokenizer, "chat_template", None))

    def usable(prompts: list[Prompt]) -> list[Prompt]:
        return [p for p in prompts if p.messages is None or has_template]

    reference_prompts, probe_prompts = usable(REFERENCE_PROMPTS), usable(KNOWN_ANSWER_PROBES)
    references: list[Generation] = []
    probes: list[tuple[Prompt, Generation]] = []
    with progress_bar("reference generations", len(reference_prompts) + len(probe_prompts), "prompts", console) as advance:
        for prompt in reference_prompts:
            references.append(greedy_generate(model, tokenizer, prompt, options.max_new_tokens, options.topk))
            advance(1)
        for prompt in probe_prompts:
            probes.append((prompt, greedy_generate(model, tokenizer, prompt, 16, options.topk)))
            advance(1)
    return references, probes


def _write_references(json_path: Path, tensor_path: Path, references: list[Generation], probes) -> None:
    tensors = {}
    for gen in references:
        tensors[f"{gen.prompt_id}.topk_ids"] = gen.topk_ids.contiguous()
        tensors[f"{gen.prompt_id}.topk_logprobs"] = gen.topk_logprobs.contiguous()
    save_file(tensors, str(tensor_path))
    atomic_write_json(
        json_path,
        {
            "references": [
                {
                    "id": gen.prompt_id,
                    "prompt": _prompt_of(gen.prompt_id),
                    "prompt_ids": gen.prompt_ids,
                    "ids": gen.ids,
                    "text": gen.text,
                    "finish_reason": gen.finish_reason,
                }
                for gen in references
            ],
            "probes": [
                {
                    "id": prompt.id,
                    "prompt": prompt.model_dump(exclude_none=True),
                    "answer": gen.text,
                    "passed": probe_passed(gen, prompt),
                }
                for prompt, gen in probes
            ],
        },
    )


def _prompt_of(prompt_id: str) -> dict[str, Any]:
    return next(p for p in REFERENCE_PROMPTS if p.id == prompt_id).model_dump(exclude_none=True)

