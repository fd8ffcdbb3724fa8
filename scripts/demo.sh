#!/usr/bin/env bash
# The main job on a fresh machine: set up, build the offline demo model, record its
# baseline and build its calibration windows. Run directory: runs/demo.
# (`quantship run`, issue #7, will take it on through quantize, validate, serve and bench.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
run=runs/demo
model=$(quantship demo-model)
quantship baseline --model "$model" --run-dir "$run"
quantship calibrate --run-dir "$run" --samples 32 --seq-len 512
echo "run directory: $(pwd)/$run"
echo "next: quantship quantize --run-dir $run --group-size 64 -v int8:smoothquant-gptq:W8A8 -v gptq-w4g64:gptq:W4A16 -v fp8dyn:fp8-dynamic"
echo "      quantship validate --run-dir $run --select smallest-passing   # then open $run/report.html"
