"""One interface over the two runtimes a variant can need: transformers and llama.cpp.

A scorer gives full next-token logits for token windows and greedy generations with
its own top-k at each step, from token ids the baseline's tokenizer produced, so a
compressed-tensors checkpoint and a GGUF file are measured by the same checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from quantship.errors import InputError
from quantship.evaluate.generation import Generation
from quantship.formats.identify import identify
from quantship.models.loading import load_causal_lm


class Scorer(Protocol):
    runtime: str  # "transformers" | "llama.cpp"
    max_context: int | None

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, L] int64 -> [B, L, V] logits."""

    def generate(self, prompt_id: str, prompt_ids: list[int], max_new_tokens: int, topk: int) -> Generation:
        """Greedy continuation of `prompt_ids` with the top-k log-probabilities of each step."""

    def close(self) -> None: ...


def open_scorer(folder: Path, tokenizer, dtype: str, device: str, n_ctx: int) -> Scorer:
    """The scorer for a variant folder: llama.cpp for GGUF, transformers for a checkpoint."""
    artifact = identify(folder)
    if artifact.runtime == "llama.cpp":
        return LlamaCppScorer(artifact.path, tokenizer, n_ctx)
    return TransformersScorer(artifact.folder, tokenizer, dtype, device)


def _finish(
    prompt_id: str, prompt_ids: list[int], new: list[int], step_logits: list[torch.Tensor], tokenizer, eos, topk: int
) -> Generation:
    logprobs = torch.log_softmax(torch.stack([s.float() for s in step_logits]), dim=-1)
    values, indices = logprobs.topk(topk, dim=-1)
    return Generation(
        prompt_id=prompt_id,
        prompt_ids=prompt_ids,
        ids=new,
        text=tokenizer.decode(new, skip_special_tokens=True),
        finish_reason="stop" if new and eos is not None and new[-1] == eos else "length",
        topk_ids=indices.to(torch.int32),
        topk_logprobs=values.to(torch.float16),
    )


class TransformersScorer:
    runtime = "transformers"

    def __init__(self, folder: Path, tokenizer, dtype: str, device: str):
        self.model = load_causal_lm(folder, dtype, device)
        self.tokenizer = tokenizer
        self.device = next(self.model.parameters()).device
        self.max_context = getattr(self.model.config, "max_position_embeddings", None)
        _require_quantized_modules(folder, self.model)

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids.to(self.device), use_cache=False).logits

    def generate(self, prompt_id: str, prompt_ids: list[int], max_new_tokens: int, topk: int) -> Generation:
        eos = self.tokenizer.eos_token_id
        with torch.inference_mode():
            out = self.model.generate(
                torch.tensor([prompt_ids], device=self.device),
                attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long, device=self.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos,
                eos_token_id=eos,
            )
        new = out.sequences[0, len(prompt_ids) :].tolist()
        return _finish(prompt_id, prompt_ids, new, [s[0].cpu() for s in out.logits], self.tokenizer, eos, topk)

    def close(self) -> None:
        del self.model


def _require_quantized_modules(folder: Path, model) -> None:
    """A compressed-tensors config whose weights transformers did not load quantized is refused.

    Otherwise a silently dequantized or ignored config would gate the wrong numbers.
    """
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    qconfig = config.get("quantization_config") or {}
    if qconfig.get("quant_method") != "compressed-tensors":
        return
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    if not any(n.endswith(("weight_scale", "weight_packed")) for n in names):
        raise InputError(
            f"transformers loaded {folder} without its compressed-tensors quantization",
            "install compressed-tensors in this environment (pip install compressed-tensors)",
        )


class LlamaCppScorer:
    runtime = "llama.cpp"

    def __init__(self, path: Path, tokenizer, n_ctx: int):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise InputError(
                "llama-cpp-python is not installed, so GGUF variants cannot be scored",
                "run `quantship setup llama.cpp`",
            ) from None
        self.tokenizer = tokenizer
        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=min(n_ctx, 512), n_threads=2, logits_all=True, verbose=False)
        self.max_context = int(self.llm.metadata.get("llama.context_length", 0)) or None

    def _eval(self, ids: list[int]) -> torch.Tensor:
        """Logits of every position; the prefix shared with the last evaluation is not computed again.

        A multiple-choice item scores one context with each choice: the context's KV cache and
        logits rows stay (llama.cpp's `eval` drops the cache past `n_tokens`, as its own
        `generate` does for a repeated prompt), so only the choice is evaluated.
        """
        done = self.llm.input_ids[: self.llm.n_tokens]
        limit = min(len(done), len(ids) - 1)  # at least one token is evaluated
        differ = np.flatnonzero(done[:limit] != np.asarray(ids[:limit]))
        keep = int(differ[0]) if differ.size else limit
        self.llm.n_tokens = keep
        self.llm.eval(ids[keep:])
        return torch.from_numpy(self.llm.scores[: len(ids)].copy())

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._eval(row.tolist()) for row in input_ids])

    def generate(self, prompt_id: str, prompt_ids: list[int], max_new_tokens: int, topk: int) -> Generation:
        eos = self.tokenizer.eos_token_id
        self.llm.reset()
        self.llm.eval(prompt_ids)
        new: list[int] = []
        steps: list[torch.Tensor] = []
        while len(new) < max_new_tokens:
            step = torch.from_numpy(self.llm.scores[self.llm.n_tokens - 1].copy())
            token = int(step.argmax())
            steps.append(step)
            new.append(token)
            if token == eos:
                break
            self.llm.eval([token])
        return _finish(prompt_id, prompt_ids, new, steps, self.tokenizer, eos, topk)

    def close(self) -> None:
        self.llm.close()
