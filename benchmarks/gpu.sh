#!/usr/bin/env bash
# kgtracin's GPU checks, in at most 8 minutes on one GPU: the CUDA, fp16 and NCCL tests, then the speed rows
# (benchmarks/gpu.py --device cuda), written to BENCHMARKS-GPU.md. Run from anywhere, in the project's venv.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: no CUDA GPU is visible to torch')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
KGTRACIN_REQUIRE_GPU=1 timeout 240 python -m pytest -q -p no:cacheprovider tests/test_gpu.py
timeout 220 python benchmarks/gpu.py --device cuda --output BENCHMARKS-GPU.md
cat BENCHMARKS-GPU.md
