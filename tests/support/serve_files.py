"""Fake checkpoints and variants on disk, shaped as serve reads them (config.json, weight
files, manifest, verdict); nothing here loads a model."""

from __future__ import annotations

import json
from pathlib import Path

from quantship.rundir import RunDir

W4A16 = {
    "quant_method": "compressed-tensors",
    "config_groups": {
        "group_0": {
            "weights": {"num_bits": 4, "type": "int", "group_size": 128},
            "input_activations": None,
            "targets": ["Linear"],
        }
    },
}
W8A8_INT8 = {
    "quant_method": "compressed-tensors",
    "config_groups": {
        "group_0": {
            "weights": {"num_bits": 8, "type": "int"},
            "input_activations": {"num_bits": 8, "type": "int", "dynamic": True},
        }
    },
}


def write_checkpoint(folder: Path, quant: dict | None = None, weight_bytes: int = 1024) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    if quant:
        config["quantization_config"] = quant
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"\0" * weight_bytes)
    return folder


def make_variant(
    run_dir: Path,
    name: str,
    quant: dict | None = W4A16,
    gguf: bool = False,
    fmt: str | None = None,
    verdict: bool | None = True,
    method: str = "test",
) -> Path:
    """A variant published through RunDir.stage, as `quantship quantize` does (`method` moves its fingerprint)."""
    runs = RunDir(run_dir)
    with runs.stage(f"variants/{name}", {"method": method}, {}) as stage:
        if gguf:
            stage.path(f"{name}.Q4_K_M.gguf").write_bytes(b"GGUF" + b"\0" * 512)
            stage.params["scheme"] = "Q4_K_M"
        else:
            write_checkpoint(stage.staging, quant)
        stage.extra["format"] = fmt or ("gguf" if gguf else "compressed-tensors")
    if verdict is not None:
        (run_dir / "validation").mkdir(parents=True, exist_ok=True)
        judged = runs.manifest(f"variants/{name}")["fingerprint"]  # as validate records it
        (run_dir / "validation" / f"{name}.json").write_text(json.dumps({"passed": verdict, "variant_fingerprint": judged}))
    return run_dir / "variants" / name
