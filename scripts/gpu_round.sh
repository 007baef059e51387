#!/usr/bin/env bash
# One lent-GPU call of the decode-step / FP8 / architecture round: the GPU tests added this round, the copy/swap/
# migrate benchmark rows before (a tree given as BASE) and after (this tree), the attention host cost, and the
# fp8 / sliding-window decode sweep. Each step has its own time limit; outputs go to OUT.
#
#   scripts/gpu_round.sh OUT [BASE]
set -u
OUT="${1:?usage: scripts/gpu_round.sh OUT [BASE]}"
BASE="${2:-}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PYTHON:-python3}
step() { echo "== $(date -u +%H:%M:%S) $1"; }
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  step "GPU tests of this round"
  PYTHONPATH=src timeout 150 $PY -m pytest -q -p no:cacheprovider -rs \
    tests/gpu/test_fused_decode_gpu.py tests/gpu/test_decode_graph_gpu.py tests/gpu/test_attention_variants_gpu.py tests/gpu/test_attention_fp8_gpu.py \
    tests/gpu/test_triton_launch_gpu.py tests/gpu/test_paged_dense_gpu.py tests/gpu/test_pool_fp8_gpu.py \
    tests/gpu/test_rope_gpu.py > "$OUT/pytest_round.txt" 2>&1
  echo "pytest rc=$?: $(tail -1 "$OUT/pytest_round.txt")"
  if [ -n "$BASE" ]; then
    step "bench before ($BASE)"
    (cd "$BASE" && PYTHONPATH=src timeout 75 $PY -m sagellm_backend bench --provider cuda --only "copy_blocks,swap,migrate" \
      --report "$OUT/bench_before.md" > "$OUT/bench_before.txt" 2>&1)
    echo "rc=$?"
  fi
  step "bench after"
  PYTHONPATH=src timeout 75 $PY -m sagellm_backend bench --provider cuda --only "copy_blocks,swap,migrate" \
    --report "$OUT/bench_after.md" > "$OUT/bench_after.txt" 2>&1
  echo "rc=$?"
  step "attention host cost"
  PYTHONPATH=src timeout 45 $PY -m sagellm_backend bench --provider cuda --only "attention host cost" \
    --report "$OUT/host_cost.md" > "$OUT/host_cost.txt" 2>&1
  echo "rc=$?"
  step "fp8 / window sweep"
  PYTHONPATH=src timeout 70 $PY bench/tune_fp8_window.py --out "$OUT" > "$OUT/tune_fp8_window.txt" 2>&1
  echo "rc=$?"
  step done
} > "$OUT/round.txt" 2>&1
cat "$OUT/round.txt"
for f in bench_before.md bench_after.md host_cost.md; do [ -f "$OUT/$f" ] && tail -n +1 "$OUT/$f" | grep '^|' ; done
tail -40 "$OUT/tune_fp8_window.txt"
