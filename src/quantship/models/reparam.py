"""An exact reparametrization of a Llama checkpoint that moves its weights off any quantization grid.

The demo checkpoint is dequantized from a Q4_1 GGUF, so every block weight lies exactly on
a Q4_1 grid (32 consecutive input columns per row, affine) and a Q4_1 variant would
reproduce it almost losslessly: no evidence of quality. Rescaling channels that the
network immediately undoes changes the weights but not the function:

- RMSNorm -> projections: the norm's weight / s, the input columns of every projection it
  feeds * s (input_layernorm -> q/k/v_proj with s; post_attention_layernorm -> gate/up_proj
  with s2). Exact: the projections see the same input.
- v_proj -> o_proj: v_proj output rows * t (per kv-head channel), o_proj input columns / t
  expanded to the query heads (query head h reads kv head h // (heads // kv_heads)).
  Exact: the attention output is a convex combination of value rows, linear in V.
- up_proj -> down_proj: up_proj output rows * u, down_proj input columns / u. Exact:
  the MLP is down(silu(gate) * up), linear in up.

Every block weight has its input columns scaled by different factors, so the 32 values of a
quantization block no longer share one grid. The token embedding (tied with lm_head) and
the final norm stay as they are: the embedding also serves as the output projection, so
no scale can be folded into it on one side and out on the other.

The scales are log-normal around 1, exp(N(0, sigma)), drawn from numpy's default_rng with a
fixed seed, so a build is reproducible bit for bit. The arithmetic is done in float32; the
caller rounds to its storage dtype once, afterwards.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

DEFAULT_SEED = 20261201
DEFAULT_SIGMA = 0.15

# (what is scaled, the norm or producer that absorbs the inverse): recorded in quantship-source.json.
PAIRS = [
    "input_layernorm.weight / s ; q_proj, k_proj, v_proj input columns * s (s: hidden_size)",
    "post_attention_layernorm.weight / s2 ; gate_proj, up_proj input columns * s2 (s2: hidden_size)",
    "v_proj output rows * t ; o_proj input columns / t expanded to query heads (t: num_key_value_heads * head_dim)",
    "up_proj output rows * u ; down_proj input columns / u (u: intermediate_size)",
]
LEFT_ALONE = [
    "model.embed_tokens.weight (tied with lm_head: the same matrix is input and output, nothing can be folded into it)",
    "model.norm.weight (it feeds the tied lm_head)",
]


def _scales(rng: np.random.Generator, size: int, sigma: float) -> torch.Tensor:
    return torch.from_numpy(np.exp(sigma * rng.standard_normal(size)).astype(np.float32))


def reparametrize(
    state: dict[str, torch.Tensor], config: Any, seed: int = DEFAULT_SEED, sigma: float = DEFAULT_SIGMA
) -> dict[str, torch.Tensor]:
    """A new state dict (float32) computing the same function as `state`, its block weights rescaled.

    `state` holds Hugging Face Llama parameter names; `config` gives num_hidden_layers,
    hidden_size, intermediate_size, num_attention_heads, num_key_value_heads and
    head_dim (hidden_size // num_attention_heads when absent). Tensors not in a block are
    copied as they are (in float32).
    """
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    group = heads // kv_heads
    rng = np.random.default_rng(seed)
    out = {name: tensor.float().clone() for name, tensor in state.items()}
    for layer in range(config.num_hidden_layers):
        p = f"model.layers.{layer}."
        s = _scales(rng, config.hidden_size, sigma)
        s2 = _scales(rng, config.hidden_size, sigma)
        t = _scales(rng, kv_heads * head_dim, sigma)
        u = _scales(rng, config.intermediate_size, sigma)

        out[p + "input_layernorm.weight"] /= s
        for proj in ("q_proj", "k_proj", "v_proj"):
            out[p + f"self_attn.{proj}.weight"] *= s[None, :]
        out[p + "self_attn.v_proj.weight"] *= t[:, None]
        if p + "self_attn.v_proj.bias" in out:
            out[p + "self_attn.v_proj.bias"] *= t
        t_heads = t.view(kv_heads, head_dim).repeat_interleave(group, dim=0).reshape(-1)
        out[p + "self_attn.o_proj.weight"] /= t_heads[None, :]

        out[p + "post_attention_layernorm.weight"] /= s2
        for proj in ("gate_proj", "up_proj"):
            out[p + f"mlp.{proj}.weight"] *= s2[None, :]
        out[p + "mlp.up_proj.weight"] *= u[:, None]
        if p + "mlp.up_proj.bias" in out:
            out[p + "mlp.up_proj.bias"] *= u
        out[p + "mlp.down_proj.weight"] /= u[None, :]
    return out


def record(seed: int = DEFAULT_SEED, sigma: float = DEFAULT_SIGMA) -> dict[str, Any]:
    """What quantship-source.json says about the reparametrization."""
    return {
        "method": "exact per-channel rescaling folded between RMSNorm/producer and consumer "
        "(quantship.models.reparam.reparametrize), in float32 before the single bf16 rounding",
        "scales": "log-normal exp(N(0, sigma)), numpy default_rng(seed), drawn per layer in the order s, s2, t, u",
        "seed": seed,
        "sigma": sigma,
        "pairs": PAIRS,
        "left_alone": LEFT_ALONE,
    }
