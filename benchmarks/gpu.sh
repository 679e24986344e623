#!/usr/bin/env bash
# The GPU checks, one prepared script of at most ~8 minutes (run it whenever a GPU is lent):
#   1. what SDM costs per step on BN-Inception at 227 px, batch 32, mixed precision with
#      channels-last, and in float32: baseline, T=8 sequential / batched / shared stem, floor;
#   2. a short training of the tiny CUB-format fixture with mixed precision on and off
#      (validation MAP@R per epoch; they should agree within noise);
#   3. two processes on this GPU train the same steps as one (tests/distributed_steps.py):
#      NCCL first (it refuses two ranks on one GPU), then gloo.
#   bash benchmarks/gpu.sh      # output in benchmarks/results/gpu.txt (and $OUT/gpu.txt if set)
# Uses .venv when present, else the python on PATH (which needs torch and this package's deps).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH=src:tests${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
RESULT=benchmarks/results/gpu.txt
WORK=$(mktemp -d)
mkdir -p benchmarks/results
exec > >(tee "$RESULT") 2>&1
date -u +"%F %T UTC"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'bf16', torch.cuda.is_bf16_supported())"

echo "== 1. cost per step, BN-Inception 227 px, batch 32"
for precision in "--amp --channels-last" ""; do
  echo "\$ python benchmarks/sdm_cost.py --trunk bninception --device cuda --batch 32 $precision"
  timeout 150 "$PYTHON" benchmarks/sdm_cost.py --trunk bninception --device cuda --batch 32 \
    --steps 10 --warmup 3 $precision
done

echo "== 2. tiny CUB fixture, mixed precision on and off"
"$PYTHON" -c "from fixtures import make_cub_tree; make_cub_tree(__import__('pathlib').Path('$WORK'), num_classes=16, per_class=4)"
TINY="dataset.root=$WORK dataset.allow_partial=true dataset.use_cache=false \
model.trunk=small_cnn model.pretrained=false optimizer.trunk_lr=0.001 \
optimizer.embedder_lr=0.001 training.batch_size=16 training.m_per_class=4 training.iterations_per_epoch=10 \
training.max_epochs=3 training.save_interval=1 training.folds=[0] training.num_workers=0 \
sdm.enabled=true experiments_root=$WORK/experiments"
for amp in true false; do
  timeout 120 "$PYTHON" -m sdm train exp_configs/cub_ms.yaml $TINY name=amp_$amp \
    training.mixed_precision=$amp > "$WORK/amp_$amp.log" 2>&1 || tail -5 "$WORK/amp_$amp.log"
  echo "mixed_precision=$amp:"; cat "$WORK/experiments/amp_$amp/fold_0/metrics.csv"
done

echo "== 3. two processes on one GPU equal one process"
"$PYTHON" -c "from sdm.config import load_config, to_yaml; \
open('$WORK/ddp.yaml', 'w').write(to_yaml(load_config(['exp_configs/cub_ms.yaml'], \
'$TINY'.split() + ['sdm.feature_dropout=0.2'])))"
for backend in nccl gloo; do
  echo "backend $backend:"
  timeout 120 "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=2 \
    tests/distributed_steps.py "$WORK/ddp.yaml" --device cuda --backend $backend --steps 3 \
    2>&1 | tail -3 && break
done
[ -n "${OUT:-}" ] && cp "$RESULT" "$OUT/gpu.txt"
rm -rf "$WORK"
