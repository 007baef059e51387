#!/usr/bin/env bash
# One lent-GPU call that probes where the decode step's time goes and verifies the kernels changed last: the GPU
# tests of the engine kernels, RoPE, direct launches and fp8 caches; the per-kernel profile of a graphed step and
# the eager host cost per component (bench/profile_decode_step.py); cuBLAS against a Triton GEMV at batch 1 and 8
# (bench/tune_gemv.py); the fp8 decode sweep over tiles, stages, early value loads and splits.
#
#   scripts/gpu_probe.sh OUT
set -u
OUT="${1:?usage: scripts/gpu_probe.sh OUT}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 PYTHONPATH=src
PY=${PYTHON:-python3}
step() { echo "== $(date -u +%H:%M:%S) $1"; }
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  step "GPU tests (engine kernels, RoPE, launches, fp8)"
  timeout 190 $PY -m pytest -v -p no:cacheprovider -rs tests/gpu/test_engine_kernels_gpu.py tests/gpu/test_rope_gpu.py \
    tests/gpu/test_triton_launch_gpu.py tests/gpu/test_attention_fp8_gpu.py tests/gpu/test_pool_fp8_gpu.py \
    > "$OUT/pytest_a.txt" 2>&1
  echo "pytest rc=$?: $(grep -cE ' PASSED' "$OUT/pytest_a.txt") passed, $(grep -cE ' FAILED| ERROR' "$OUT/pytest_a.txt") failed/error"
  step "profile"
  timeout 100 $PY bench/profile_decode_step.py > "$OUT/profile.txt" 2>&1
  echo "rc=$?"
  step "gemv"
  timeout 60 $PY bench/tune_gemv.py > "$OUT/gemv.txt" 2>&1
  echo "rc=$?"
  step "fp8 sweep"
  timeout 120 $PY bench/tune_fp8_window.py --no-window --wide --out "$OUT" > "$OUT/fp8_wide.txt" 2>&1
  echo "rc=$?"
  step done
} > "$OUT/probe.txt" 2>&1
cat "$OUT/probe.txt"
grep -E " FAILED| ERROR" "$OUT/pytest_a.txt" | head -20
tail -2 "$OUT/pytest_a.txt"
grep -v -i warn "$OUT/profile.txt" | head -90
grep '^|' "$OUT/gemv.txt"
grep -v -i warn "$OUT/fp8_wide.txt" | cut -c1-100 | tail -64
