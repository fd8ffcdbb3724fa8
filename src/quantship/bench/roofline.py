"""The memory-bandwidth bound on decode speed, and the machine's bandwidth.

Decoding one token at batch size 1 reads every weight once, so no server can beat
`bandwidth / bytes of weights read per token`; the fraction of that bound a server
reaches says how much headroom its kernels leave, and why 4-bit weights decode
faster than bf16 on the same stack.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

# Embedding tables are looked up one row per token, unless the output head shares them.
_HF_EMBED, _HF_HEAD = "model.embed_tokens.weight", "lm_head.weight"
_GGUF_EMBED, _GGUF_HEAD = "token_embd.weight", "output.weight"


def _safetensors_sizes(folder: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with open(file, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, info in header.items():
            if name != "__metadata__":
                begin, end = info["data_offsets"]
                sizes[name] = end - begin
    return sizes


def _gguf_sizes(file: Path) -> dict[str, int]:
    from gguf import GGUFReader

    return {t.name: int(t.n_bytes) for t in GGUFReader(str(file)).tensors}


def weight_bytes_per_token(model: Path) -> int:
    """Bytes of weights one decode step reads: all of them, less an untied embedding table."""
    model = Path(model)
    if model.suffix == ".gguf":
        sizes, embed, head = _gguf_sizes(model), _GGUF_EMBED, _GGUF_HEAD
    else:
        sizes, embed, head = _safetensors_sizes(model), _HF_EMBED, _HF_HEAD
    if not sizes:
        raise ValueError(f"no weights found in {model}")
    total = sum(sizes.values())
    if head in sizes and embed in sizes:
        total -= sizes[embed]  # separate head: the table is read one row at a time
    return total


def read_bandwidth(size_bytes: int = 512 << 20, repeats: int = 7) -> dict[str, float]:
    """Best-of-N memory read bandwidth (bytes/s): summing a buffer far larger than the caches.

    Measured with torch on all its threads (as a server's decode threads read) and with
    numpy on one thread, so the JSON shows how much of the bound one core can reach.
    """
    import numpy as np
    import torch

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return size_bytes / min(times)

    tensor = torch.ones(size_bytes // 4, dtype=torch.float32)
    array = np.ones(size_bytes // 4, dtype=np.float32)
    return {
        "torch_sum_bytes_per_s": best(lambda: float(tensor.sum())),
        "numpy_sum_1thread_bytes_per_s": best(lambda: float(np.add.reduce(array))),
        "torch_threads": float(torch.get_num_threads()),
        "buffer_bytes": float(size_bytes),
    }


def decode_bound(bandwidth_bytes_per_s: float, bytes_per_token: int) -> float:
    """Tokens/s a batch-1 decoder cannot exceed when weights stream from memory."""
    return bandwidth_bytes_per_s / bytes_per_token
