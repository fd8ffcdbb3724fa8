"""Prove setup's torch step on a fresh box, up to the point where it would download torch.

Does what `scripts/setup.sh` does on a machine without this one's pip configuration
(PIP_CONFIG_FILE=/dev/null, no PIP_* variables): a new venv, quantship installed without
its dependencies, `python -m quantship.envs.torch_wheel pip-args`, then pip's dry run of
exactly those arguments against the real indexes, which resolves the wheel from the
index and its metadata without downloading it. Checks:

1. plain `torch==<pin>` from PyPI is the CUDA build (it requires nvidia-* packages);
2. the vLLM CPU environment (always) and, without a GPU, the project venv ask for
   `torch==<pin>+cpu` from PyTorch's CPU index, and pip resolves it there. Where that
   index cannot be reached from here, this is said, and the same arguments are resolved
   against a local copy of the index holding the CPU wheel (--cpu-wheel), so pip's choice
   between the two indexes is still exercised;
3. with this machine's own pip configuration, a configured CPU wheel is used as it is.

    python scripts/check-fresh-torch.py [--cpu-wheel /opt/wheels/torch-2.13.0+cpu-...whl]

Exit 0 when every check that could run passed; prints one line per check.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from quantship.envs import torch_wheel, vllm_cpu  # noqa: E402


def fresh_env(**extra: str) -> dict[str, str]:
    """This process's environment without any pip configuration, as on a new machine."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") and k not in (torch_wheel.CPU_INDEX_ENV, "PYTHONPATH")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def run(argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"FAIL: {' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return done.stdout.strip()


def dry_run(python: Path, args: list[str], env: dict[str, str], report: Path) -> dict | None:
    """pip's report for `pip install --dry-run --no-deps <args>`; None when nothing resolved."""
    argv = [str(python), "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps", "--quiet",
            "--report", str(report), *args]
    subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    try:
        return json.loads(report.read_text(encoding="utf-8"))["install"][0]
    except (FileNotFoundError, json.JSONDecodeError, KeyError, IndexError):
        return None


def reachable(url: str) -> str | None:
    """None when the index answers, else why not."""
    try:
        with urllib.request.urlopen(f"{url}/torch/", timeout=15):
            return None
    except OSError as error:
        return str(getattr(error, "reason", error))


def local_index(folder: Path, wheel: Path) -> str:
    """A PEP 503 copy of the CPU index holding one wheel."""
    (folder / "torch").mkdir(parents=True)
    (folder / "torch" / wheel.name).symlink_to(wheel)
    (folder / "torch" / "index.html").write_text(f'<a href="{wheel.name}">{wheel.name}</a>\n', encoding="utf-8")
    return folder.as_uri()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-wheel", type=Path, help="the CPU wheel, for a local copy of the index if it is unreachable")
    parser.add_argument("--python", default=shutil.which("python3.11") or "python3",
                        help="interpreter for the fresh venv (as setup.sh: python3.11, else python3)")
    args = parser.parse_args()
    failures = 0

    def check(ok: bool, line: str) -> None:
        nonlocal failures
        failures += not ok
        print(f"{'PASS' if ok else 'FAIL'}: {line}", flush=True)

    with tempfile.TemporaryDirectory(prefix="fresh-box-") as tmp:
        tmp = Path(tmp)
        env = fresh_env()
        run([args.python, "-m", "venv", str(tmp / "venv")], env)
        python = tmp / "venv" / "bin" / "python"
        run([str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)], env)
        pin = run([str(python), "-c", "from quantship.envs import torch_wheel; print(torch_wheel.project_pin())"], env)
        gpu = torch_wheel.gpu_present()
        print(f"fresh venv {python} (pip configuration off), torch pin {pin}, GPU present: {gpu}")

        plain = dry_run(python, [f"torch=={pin}"], env, tmp / "plain.json")
        cuda = plain is not None and any(r.startswith("nvidia-") for r in plain["metadata"].get("requires_dist", []))
        check(cuda and plain["metadata"]["version"] == pin,
              f"plain `torch=={pin}` resolves to {plain and plain['download_info']['url']} (the CUDA build: {cuda})")

        chosen = run([str(python), "-m", "quantship.envs.torch_wheel", "pip-args"], env).split()
        wanted = [f"torch=={pin}"] if gpu else ["--extra-index-url", torch_wheel.CPU_INDEX_URL, f"torch=={pin}+cpu"]
        check(chosen == wanted, f"setup's torch step would run `pip install {' '.join(chosen)}`")
        code = ("import sys; from quantship.envs import torch_wheel; "
                "print(' '.join(torch_wheel.cpu_install_args([sys.executable, '-m', 'pip'], sys.argv[1])))")
        vllm = run([str(python), "-c", code, vllm_cpu.TORCH_VERSION], env).split()
        wanted = ["--extra-index-url", torch_wheel.CPU_INDEX_URL, f"torch=={vllm_cpu.TORCH_VERSION}+cpu"]
        check(vllm == wanted, f"the vLLM CPU env's torch step would run `pip install {' '.join(vllm)}` (GPU or not)")
        if not gpu:
            why = reachable(torch_wheel.CPU_INDEX_URL)
            if why is None:
                got = dry_run(python, chosen, env, tmp / "cpu.json")
                url = got and got["download_info"]["url"]
                check(got is not None and got["metadata"]["version"] == f"{pin}+cpu" and url.startswith("https://download.pytorch.org/"),
                      f"pip resolves those arguments to {url}")
            else:
                print(f"NOTE: {torch_wheel.CPU_INDEX_URL} is unreachable from here ({why}); "
                      "resolving the same arguments against a local copy of it instead")
                if args.cpu_wheel is None:
                    print("SKIP: no --cpu-wheel given for the local copy of the CPU index")
                else:
                    copy = local_index(tmp / "cpu-index", args.cpu_wheel.resolve())
                    mirror_env = fresh_env(**{torch_wheel.CPU_INDEX_ENV: copy})
                    chosen = run([str(python), "-m", "quantship.envs.torch_wheel", "pip-args"], mirror_env).split()
                    got = dry_run(python, chosen, mirror_env, tmp / "mirror.json")
                    url = got and got["download_info"]["url"]
                    check(got is not None and got["metadata"]["version"] == f"{pin}+cpu" and url.startswith(copy),
                          f"with the index at {copy} (PyPI still the default index) pip resolves "
                          f"`{' '.join(chosen)}` to {url}")

        configured = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        local = run([str(python), "-m", "quantship.envs.torch_wheel", "pip-args"], configured).split()
        got = dry_run(python, local, configured, tmp / "local.json")
        if got is not None and got["metadata"]["version"] == f"{pin}+cpu" and not gpu:
            check(local == [f"torch=={pin}"], f"with this machine's pip configuration: `pip install {' '.join(local)}` "
                                              f"-> {got['download_info']['url']} (the configured CPU wheel, as it is)")
        else:
            print("SKIP: this machine's pip configuration offers no CPU wheel of torch")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
