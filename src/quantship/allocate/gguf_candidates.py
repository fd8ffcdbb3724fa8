"""GGUF candidates: every ggml type llama.cpp can put on each tensor, from llama.cpp itself.

For each candidate type the whole model is quantized once with `llama-quantize --pure`
(with the run's importance matrix when the variant uses one) and read back: a tensor
whose file type is the requested one can take that type; one llama.cpp moved to a
fallback (rows not a multiple of the type's block) cannot, and that type is never
proposed for it. The weights are the file's own, dequantized with the `gguf`
package, so what the sensitivity pass measures is what the built variant holds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize
from rich.console import Console

from quantship.allocate.candidates import CandidateSet, TensorChoices
from quantship.data.calibration import load_calibration
from quantship.errors import InputError
from quantship.models.demo import unpermute_rope
from quantship.progress import progress_bar
from quantship.quantize.base import QuantizeContext
from quantship.quantize.gguf_cache import CACHE_DIR
from quantship.quantize.gguf_inspect import open_reader, remembered_summary
from quantship.quantize.gguf_names import checkpoint_weight_names, hf_to_gguf_names, ties_embeddings
from quantship.quantize.gguf_pipeline import pure_candidate, pure_sources
from quantship.rundir import RunDir

# Every type llama.cpp's CPU backend computes with that quantizes without special data
# (the IQ1/IQ2/IQ3 types need an imatrix and a grid search; TQ types are ternary models').
GGUF_CANDIDATE_TYPES = ("Q2_K", "Q3_K", "Q4_0", "IQ4_NL", "Q4_1", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_0", "BF16")
# llama.cpp's converter permutes q/k rows for these architectures (LlamaModel.permute).
_ROPE_PERMUTED = {"llama"}


def type_bits(ggml_type: str, numel: int) -> float:
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[ggml_type]]
    return numel * size * 8 / block


def gguf_candidates(run: RunDir, checkpoint: Path, imatrix: bool, types: list[str] | None, console: Console) -> CandidateSet:
    wanted = list(types or GGUF_CANDIDATE_TYPES)
    unknown = [t for t in wanted if t not in GGMLQuantizationType.__members__]
    if unknown:
        raise InputError(f"unknown ggml types {unknown}", f"choose candidate types among {', '.join(GGUF_CANDIDATE_TYPES)}")
    if "BF16" not in wanted:
        wanted.append("BF16")  # keeping a tensor as it is must always be possible
    quantized = [t for t in wanted if t != "BF16"]
    if not quantized:
        raise InputError("the candidate types hold no quantized type", f"add some of {', '.join(GGUF_CANDIDATE_TYPES[:-1])}")
    ctx = QuantizeContext(checkpoint, load_calibration(run) if imatrix else None, run, console)
    logs = run.root / CACHE_DIR / "logs"
    float_file, matrix = pure_sources("allocate", ctx, checkpoint, imatrix, logs)
    files = {}
    with progress_bar("allocate: the model at every candidate type", len(quantized), "types", console) as advance:
        for t in quantized:
            files[t] = pure_candidate("allocate", ctx, float_file, matrix, t, logs)
            advance(1)
    float_summary = remembered_summary(float_file)
    readers: dict[str, GGUFReader] = {}  # memory-mapped, opened when first needed (a rerun needs none)

    def reader(type_: str) -> GGUFReader:
        if type_ not in readers:
            readers[type_] = open_reader(files[type_])
        return readers[type_]

    written = {t: remembered_summary(f, lambda t=t: reader(t)).tensor_types for t, f in files.items()}
    to_hf = _gguf_to_hf(checkpoint, float_summary.architecture, float_summary.block_count or 0)
    tensors: dict[str, TensorChoices] = {}
    fixed = 0.0
    for tensor, shape in float_summary.tensor_shapes.items():
        numel = int(np.prod(shape))
        name = to_hf.get(tensor)
        if len(shape) < 2 or name is None:
            fixed += type_bits(float_summary.tensor_types[tensor], numel)
            continue
        bits = {t: type_bits(t, numel) for t in wanted if t == "BF16" or written[t].get(tensor) == t}
        tensors[name] = TensorChoices(name, numel, bits)
    inverse = {hf: g for g, hf in to_hf.items()}

    def weights(type_: str, only: set[str] | None = None) -> dict[str, torch.Tensor]:
        if type_ == "BF16":
            raise ValueError("BF16 is the baseline's own weight; it needs no dequantizing")
        names = {inverse[n] for n, c in tensors.items() if type_ in c.bits and (only is None or n in only)}
        return gguf_weights(reader(type_), checkpoint, names)

    return CandidateSet(
        backend="gguf", tensors=tensors, fixed_bits=fixed, total_elements=float_summary.total_elements, weights=weights,
        identity={"backend": "gguf", "files": sorted(f.name for f in files.values()), "types": sorted(wanted)},
    )


def _gguf_to_hf(checkpoint: Path, architecture: str, blocks: int) -> dict[str, str]:
    """GGUF tensor -> Hugging Face parameter name, for every weight matrix (tied embeddings: token_embd)."""
    modules = hf_to_gguf_names(checkpoint_weight_names(checkpoint), architecture, blocks)
    mapping = {tensor: f"{module}.weight" for module, tensor in modules.items()}
    if ties_embeddings(checkpoint):
        mapping.pop("output.weight", None)
    return mapping


def gguf_weights(reader: GGUFReader, checkpoint: Path, tensors: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Weight matrices of a GGUF file, dequantized to float32, by Hugging Face name (q/k rows un-permuted)."""
    arch = _field(reader, "general.architecture")
    to_hf = _gguf_to_hf(checkpoint, arch, int(_field(reader, f"{arch}.block_count") or 0))
    heads = {"q_proj": _field(reader, f"{arch}.attention.head_count"), "k_proj": _field(reader, f"{arch}.attention.head_count_kv")}
    weights = {}
    for tensor in reader.tensors:
        name = to_hf.get(tensor.name)
        if name is None or len(tensor.shape) < 2 or (tensors is not None and tensor.name not in tensors):
            continue
        values = dequantize(tensor.data, tensor.tensor_type).reshape(tuple(int(d) for d in reversed(tensor.shape)))
        kind = name.rsplit(".", 2)[-2]
        if arch in _ROPE_PERMUTED and kind in heads and heads[kind]:
            values = unpermute_rope(values, int(heads[kind]))
        weights[name] = torch.from_numpy(np.array(values, dtype=np.float32))
    if not weights:
        raise InputError(f"{reader.data.filename}: no tensor maps to a weight of {checkpoint}", "quantize from this run's baseline")
    return weights


def _field(reader, key: str):
    field = reader.fields.get(key)
    return field.contents() if field is not None else None

