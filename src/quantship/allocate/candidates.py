"""What each tensor may become: its candidate types, their exact sizes, their dequantized weights.

A CandidateSet is backend-neutral: the GGUF producer (gguf_candidates.py) gets its
weights from llama.cpp's own quantizer, the llm-compressor one (llmc_candidates.py)
from compressed-tensors' round-to-nearest. Sizes are the bits the written files will
hold, so predicted bits/weight equal the manifest's measured figure.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from quantship.quantize.spec import LayerOverride

UNQUANTIZED = {"gguf": "BF16", "compressed-tensors": "bf16"}  # the choice that keeps a tensor as the baseline has it


@dataclass
class TensorChoices:
    name: str  # Hugging Face parameter name, e.g. model.layers.3.mlp.down_proj.weight
    numel: int
    bits: dict[str, float]  # candidate type -> storage bits of the whole tensor

    @property
    def module(self) -> str:
        return self.name.removesuffix(".weight")

    @property
    def block(self) -> int | None:
        match = re.match(r"model\.layers\.(\d+)\.", self.name)
        return int(match.group(1)) if match else None


@dataclass
class CandidateSet:
    backend: str  # "gguf" | "compressed-tensors"
    tensors: dict[str, TensorChoices]
    fixed_bits: float  # everything the allocation does not choose (norms, an unquantized head, ...)
    total_elements: int  # the bits/weight denominator, as the quantize stage measures it
    # (type, names or None for all) -> dequantized float32 weights of the tensors it fits
    weights: Callable[[str, set[str] | None], dict[str, torch.Tensor]]
    identity: dict[str, Any] = field(default_factory=dict)  # what decides the candidates (the sensitivity key)
    # tensors that must share one type (vLLM fuses q/k/v and gate/up into one layer); default: none
    groups: dict[str, list[str]] = field(default_factory=dict)

    def items(self) -> dict[str, list[str]]:
        """Knapsack items: each group, and every tensor outside the groups on its own."""
        grouped = {n for members in self.groups.values() for n in members}
        return {**{n: [n] for n in self.tensors if n not in grouped}, **self.groups}

    def expand(self, item_types: dict[str, str]) -> dict[str, str]:
        """Item -> type back to tensor -> type."""
        items = self.items()
        return {tensor: type_ for item, type_ in item_types.items() for tensor in items[item]}

    @property
    def unquantized(self) -> str:
        return UNQUANTIZED[self.backend]

    def types(self) -> list[str]:
        return sorted({t for choices in self.tensors.values() for t in choices.bits})

    def bits_per_weight(self, types: dict[str, str]) -> float:
        return (self.fixed_bits + sum(self.tensors[n].bits[t] for n, t in types.items())) / self.total_elements

    def uniform_bits_per_weight(self, type_: str) -> float:
        """Size when every tensor takes `type_` where it fits, its unquantized choice elsewhere (for reports)."""
        return self.bits_per_weight({n: type_ if type_ in c.bits else self.unquantized for n, c in self.tensors.items()})


def overrides_for(types: dict[str, str]) -> list[LayerOverride]:
    """One exact, anchored override per tensor: what the quantize stage builds the assignment from."""
    return [LayerOverride(pattern=f"^{re.escape(name.removesuffix('.weight'))}$", type=type_) for name, type_ in types.items()]
