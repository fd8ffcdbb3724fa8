"""Small checkpoints and variants on disk, shaped as serve reads them (config.json, weight
files, a real GGUF header, manifest, verdict); nothing here loads a model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, LlamaFileType

from quantship.formats.identify import identify
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


def write_gguf(path: Path, file_type: str = "Q4_K_M", rows: int = 4) -> Path:
    """A real GGUF file (header with general.file_type, one small f32 tensor) that gguf and identify() read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(str(path), "llama")
    writer.add_file_type(LlamaFileType[f"MOSTLY_{file_type}" if file_type != "F32" else "ALL_F32"].value)
    writer.add_tensor("token_embd.weight", np.zeros((rows, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def make_variant(
    run_dir: Path,
    name: str,
    quant: dict | None = W4A16,
    gguf: bool = False,
    recorded: dict | None = None,
    verdict: bool | None = True,
    method: str = "test",
) -> Path:
    """A variant published through RunDir.stage, as `quantship quantize` does (`method` moves its fingerprint)."""
    runs = RunDir(run_dir)
    with runs.stage(f"variants/{name}", {"method": method}, {}) as stage:
        if gguf:
            write_gguf(stage.path(f"{name}.Q4_K_M.gguf"))
            stage.params["scheme"] = "Q4_K_M"
        else:
            write_checkpoint(stage.staging, quant)
        artifact = identify(stage.staging)
        stage.extra.update(format=artifact.label, artifact=recorded or artifact.as_record())  # as quantize records it
    if verdict is not None:
        (run_dir / "validation").mkdir(parents=True, exist_ok=True)
        judged = runs.manifest(f"variants/{name}")["fingerprint"]  # as validate records it
        (run_dir / "validation" / f"{name}.json").write_text(json.dumps({"passed": verdict, "variant_fingerprint": judged}))
    return run_dir / "variants" / name
