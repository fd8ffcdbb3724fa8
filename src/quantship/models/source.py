"""`model:` of pipeline.yaml -> a local checkpoint folder.

`demo` builds the offline demo model; `hf:ORG/NAME[@REVISION]` fetches the safetensors,
config and tokenizer files with huggingface_hub (only where the machine can reach the
hub: quantship never downloads weights on its own otherwise); anything else is a path.
"""

from __future__ import annotations

from pathlib import Path

from quantship.errors import InputError

HUB_FILES = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]


def resolve_model(spec: str, base: Path) -> Path:
    if spec == "demo":
        from quantship.models.demo import materialise_demo_model

        return materialise_demo_model()
    if spec.startswith("hf:"):
        return _from_hub(spec[3:])
    path = Path(spec).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_dir():
        raise InputError(f"model {spec!r}: {path} is not a folder", "set model: to a checkpoint folder, `demo`, or hf:ORG/NAME")
    return path


def _from_hub(repo: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    name, _, revision = repo.partition("@")
    try:
        return Path(snapshot_download(name, revision=revision or None, allow_patterns=HUB_FILES))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as error:
        raise InputError(
            f"cannot fetch {name} from the Hugging Face hub ({type(error).__name__})",
            "download it where the hub is reachable (`hf download ...`) and set model: to that folder",
        ) from None
