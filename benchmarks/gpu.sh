#!/usr/bin/env bash
# BN-Inception training speed on a GPU, mixed precision, 227 px, batch 32: baseline, SDM T=1,
# SDM T=8 sequential (as the paper's code) and SDM T=8 batched as one 8*B forward.
# One command, a few minutes:  bash benchmarks/gpu.sh   (output also in benchmarks/results/gpu.txt)
# Uses .venv when present, else the python on PATH (which needs torch and this package's deps).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
mkdir -p benchmarks/results
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee benchmarks/results/gpu.txt
PYTHONPATH=src timeout 480 "$PYTHON" benchmarks/sdm_cost.py --trunk bninception --device cuda \
  --amp --batch 32 --steps 20 --warmup 5 | tee -a benchmarks/results/gpu.txt
