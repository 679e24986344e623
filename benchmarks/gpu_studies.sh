#!/usr/bin/env bash
# The studies' GPU run, one prepared script for a lent GPU (about 9 minutes; rerunnable, it
# continues the ledgers):
#   1. the step cost at every perturbation point of EfficientNet-Lite0 at 64 px (the studies'
#      regime) on this GPU, T=8 batched (the engine's choice on CUDA), into the step-cost file;
#   2. the convergence study (exp_configs/studies/convergence_study.yaml) on the GPU: the
#      paper setting's remaining runs (steps 4 and 5: 7.65x a baseline step on a CPU, so the
#      runs a GPU helps most), until the time limit; finished runs go into its ledger, an
#      interrupted one resumes. The cheaper arms continue on the CPU.
# Needs data/icons (carry it: `make icons` builds it) and this package's dependencies.
#   bash benchmarks/gpu_studies.sh [SECONDS]   # study time limit, default 420
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
LIMIT=${1:-420}
RESULT=benchmarks/results/gpu_studies.txt
exec > >(tee "$RESULT") 2>&1
date -u +"%F %T UTC"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

echo "== 1. step cost at every point, EfficientNet-Lite0 64 px, batch 32, cuda"
timeout 120 "$PYTHON" benchmarks/sdm_cost.py --trunk efficientnet_lite0 --side 64 \
  --loss multi_similarity --device cuda --points --steps 10 --warmup 3 \
  --json benchmarks/results/sdm_cost_points.json

echo "== 2. convergence study on cuda, the paper setting's runs, ${LIMIT} s"
timeout --signal=TERM "$LIMIT" "$PYTHON" -m sdm study run \
  exp_configs/studies/convergence_study.yaml --device cuda --steps 4 5
"$PYTHON" -m sdm study report exp_configs/studies/convergence_study.yaml
if [ -n "${OUT:-}" ]; then
  cp "$RESULT" benchmarks/results/sdm_cost_points.json "$OUT/"
  cp benchmarks/results/convergence_study.* "$OUT/" 2>/dev/null
fi
