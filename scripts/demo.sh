#!/usr/bin/env bash
# The main job on a fresh machine: set up, build the offline demo model, and run the
# pipeline stages that exist on it. Run directory: runs/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
model=$(quantship demo-model)
quantship baseline --model "$model" --name demo
quantship calibrate --name demo --samples 64 --seq-len 512
echo "run directory: $(pwd)/runs/demo"
