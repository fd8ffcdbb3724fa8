"""Predicted KL of every (tensor, candidate type), measured on calibration text.

Two measurements, both against the untouched baseline on the same calibration tokens
(never the windows the gate scores):

1. For every tensor, the real KL when only that tensor is replaced by its dequantized
   cheapest candidate (the noisiest one, so the signal is clearest). The forward pass
   starts at the tensor's own block from cached block inputs; tensors outside the
   blocks (the token embedding, which a tied head shares) run the whole model.
2. For every candidate type, the tensor's output error on the same tokens,
   tr(dW H dW^T) with H = X^T X from the tensor's own inputs: exact for that layer's
   output, one matrix product per choice.

A type's predicted KL is the measured KL scaled by its output error relative to the
measured type's (KL is quadratic in a small perturbation, and so is the output error).
Tensors with no input Gram matrix (embeddings) get a real KL for every type. Errors and
KLs are written as they are measured, so an interrupted pass resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from quantship.allocate.candidates import CandidateSet
from quantship.models.loading import load_causal_lm
from quantship.rundir import atomic_write_json, read_json, sha256_json

SAVE_EVERY_S = 10.0  # seconds between writes of the resumable record


class _Probe:
    """The baseline model with hooks: reference log-probabilities, block inputs, input Gram matrices."""

    def __init__(self, checkpoint: Path, input_ids: torch.Tensor, linear_names: set[str]) -> None:
        self.model = load_causal_lm(checkpoint, "float32", "cpu")
        self.params = dict(self.model.named_parameters())
        self.layers = self.model.model.layers
        self.block_inputs: dict[int, torch.Tensor] = {}
        self.gram: dict[str, torch.Tensor] = {}
        handles = []
        for index, layer in enumerate(self.layers):
            handles.append(layer.register_forward_pre_hook(self._keep_input(index), with_kwargs=True))
        for name, module in self.model.named_modules():
            if f"{name}.weight" in linear_names and isinstance(module, torch.nn.Linear):
                handles.append(module.register_forward_pre_hook(self._accumulate(f"{name}.weight")))
        with torch.inference_mode():
            self.reference = torch.log_softmax(self.model(input_ids=input_ids, use_cache=False).logits.float(), -1)
        for handle in handles:
            handle.remove()
        # accumulated in float64, used in float32: predictions take ratios of these errors, and a
        # float32 product is twice as fast on these cores
        self.gram = {name: gram.float() for name, gram in self.gram.items()}
        self.input_ids = input_ids

    def _keep_input(self, index: int):
        def hook(module, args, kwargs):
            self.block_inputs[index] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

        return hook

    def _accumulate(self, name: str):
        def hook(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            self.gram[name] = self.gram.get(name, 0) + x.T @ x

        return hook

    def kl_with(self, name: str, weight: torch.Tensor, block: int | None) -> float:
        """Mean KL(baseline || baseline with `name` replaced), over the probe's tokens."""
        param = self.params[name]
        saved = param.data.clone()
        param.data.copy_(weight.to(param.dtype))
        try:
            with torch.inference_mode():
                if block is None:
                    logits = self.model(input_ids=self.input_ids, use_cache=False).logits
                else:
                    self.model.model.layers = self.layers[block:]
                    try:
                        logits = self.model(inputs_embeds=self.block_inputs[block], use_cache=False).logits
                    finally:
                        self.model.model.layers = self.layers
        finally:
            param.data.copy_(saved)
        logp = torch.log_softmax(logits.float(), -1)
        return float((self.reference.exp() * (self.reference - logp)).sum(-1).mean())

    def output_error(self, name: str, weight: torch.Tensor) -> float:
        delta = weight.float() - self.params[name].detach().float()
        return float(((delta @ self.gram[name]) * delta).sum(dtype=torch.float64))


def sensitivity_key(candidates: CandidateSet, baseline_fingerprint: str, calibration_sha: str, tokens: int) -> str:
    return sha256_json({"candidates": candidates.identity, "baseline": baseline_fingerprint,
                        "calibration": calibration_sha, "tokens": tokens})[:16]


def measure_sensitivity(
    checkpoint: Path, candidates: CandidateSet, input_ids: torch.Tensor, record_path: Path, key: str,
    status: Callable[[str], None], advance: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """{"tensors": {name: {"predicted_kl": {type: nats}, "measured_type", "measured_kl", "output_error": {type: ...}}}, ...}.

    Resumes from `record_path` when its key matches; `advance(1)` per tensor measured.
    """
    record = _resume(record_path, key, candidates, input_ids)
    started, last_save = time.time(), time.time()
    todo = [n for n in candidates.tensors if "measured_kl" not in record["tensors"][n]]
    if not todo:
        return record
    status("measuring the baseline on the calibration tokens")
    probe = _Probe(checkpoint, input_ids, set(candidates.tensors))
    unquantized = candidates.unquantized
    for type_ in candidates.types():
        if type_ == unquantized:
            continue
        names = [n for n in todo if type_ in candidates.tensors[n].bits and type_ not in record["tensors"][n]["output_error"]]
        gram_names = [n for n in names if n in probe.gram]
        if not gram_names:
            continue
        status(f"output error of every tensor at {type_}")
        weights = candidates.weights(type_, set(gram_names))
        for name in gram_names:
            record["tensors"][name]["output_error"][type_] = probe.output_error(name, weights[name])
        del weights
        _save(record_path, record)
    by_type: dict[str | None, list[str]] = {}
    for name in todo:
        by_type.setdefault(_measured_type(record["tensors"][name], candidates, name, name in probe.gram), []).append(name)
    for type_, names in by_type.items():
        weights = candidates.weights(type_, {n for n in names if n in probe.gram}) if type_ is not None else {}
        for name in names:
            entry, choices = record["tensors"][name], candidates.tensors[name]
            if type_ is None:  # only the unquantized choice: nothing to measure
                entry.update(measured_type=None, measured_kl=0.0)
            elif name in probe.gram:
                entry.update(measured_type=type_, measured_kl=probe.kl_with(name, weights[name], choices.block))
            else:  # no input Gram matrix (an embedding): a real KL for every type
                kls = {t: probe.kl_with(name, candidates.weights(t, {name})[name], choices.block)
                       for t in choices.bits if t != unquantized}
                entry.update(kl_by_type=kls, measured_type=type_, measured_kl=kls[type_])
            if advance is not None:
                advance(1)
            if time.time() - last_save > SAVE_EVERY_S:
                _save(record_path, record)
                last_save = time.time()
        del weights
    record["seconds"] = round(record.get("seconds", 0) + time.time() - started, 1)
    _predict(record, candidates)
    _save(record_path, record)
    return record


def _measured_type(entry: dict[str, Any], candidates: CandidateSet, name: str, has_gram: bool) -> str | None:
    """The tensor's cheapest quantized choice (largest output error among equals): the clearest KL signal."""
    choices = candidates.tensors[name]
    quantized = [t for t in choices.bits if t != candidates.unquantized]
    if not quantized:
        return None
    errors = entry["output_error"] if has_gram else {}
    return min(quantized, key=lambda t: (choices.bits[t], -errors.get(t, 0.0)))


def _resume(path: Path, key: str, candidates: CandidateSet, input_ids: torch.Tensor) -> dict[str, Any]:
    record = None
    if path.is_file():
        previous = read_json(path)
        if previous.get("key") == key:
            record = previous
    if record is None:
        record = {"key": key, "tokens": int(input_ids.numel()), "method": __doc__.splitlines()[0], "tensors": {}}
    for name in candidates.tensors:
        record["tensors"].setdefault(name, {"output_error": {}})
    return record


def _predict(record: dict[str, Any], candidates: CandidateSet) -> None:
    """predicted_kl per (tensor, type): measured KL scaled by relative output error; 0 for the unquantized choice."""
    for name, choices in candidates.tensors.items():
        entry = record["tensors"][name]
        predicted = {candidates.unquantized: 0.0} if candidates.unquantized in choices.bits else {}
        if "kl_by_type" in entry:
            predicted.update(entry["kl_by_type"])
        elif entry["measured_type"] is not None:
            reference = entry["output_error"][entry["measured_type"]]
            for type_, error in entry["output_error"].items():
                if type_ in choices.bits:
                    predicted[type_] = entry["measured_kl"] * (error / reference if reference > 0 else 0.0)
        entry["predicted_kl"] = {t: max(v, 0.0) for t, v in predicted.items()}
        entry["bits"] = dict(choices.bits)


def _save(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)
