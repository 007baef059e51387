#!/usr/bin/env bash
# One lent-GPU call, everything this pass needs within 10 minutes: the GPU tests of what changed (fp8 value tiles
# converted by inline assembly first, then engine kernels, RoPE, direct and bound launches with int pointers, fp8
# caches, fused decode, graph replay), the end-to-end decode-step bench, the attention host cost, the fp8 decode points
# (fp8_v_asm, early value loads, register caps), the per-kernel profile of a graphed step and the eager host cost per
# component, and the small-batch GEMV.
#
#   scripts/gpu_final.sh OUT
set -u
OUT="${1:?usage: scripts/gpu_final.sh OUT}"
. "$(dirname "$0")/gpu_env.sh"
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  step "fp8_v_asm GPU test"
  timeout 50 $PY -m pytest -v -p no:cacheprovider -rs tests/gpu/test_attention_fp8_gpu.py -k inline_asm \
    > "$OUT/pytest_asm.txt" 2>&1
  echo "pytest (fp8_v_asm) rc=$?: $(grep -cE ' PASSED' "$OUT/pytest_asm.txt") passed"
  run_step "fp8 points" 60 "$OUT/fp8.txt" $PY bench/tune_fp8_window.py --no-window --wide --quick --out "$OUT"
  run_step "decode-step bench" 150 "$OUT/decode_step.txt" \
    $PY bench/bench_decode_step.py --json "$OUT/decode_step.json" --plot "$OUT/decode_step.png" --time-budget 70
  run_step "attention host cost" 30 "$OUT/host_cost.txt" \
    $PY -m sagellm_backend bench --provider cuda --only "attention host cost" --report "$OUT/host_cost.md"
  step "GPU tests"
  timeout 130 $PY -m pytest -v -p no:cacheprovider -rs tests/gpu/test_fused_decode_gpu.py \
    tests/gpu/test_attention_fp8_gpu.py tests/gpu/test_engine_kernels_gpu.py tests/gpu/test_rope_gpu.py \
    tests/gpu/test_triton_launch_gpu.py tests/gpu/test_decode_graph_gpu.py tests/gpu/test_pool_fp8_gpu.py \
    -k "not inline_asm" > "$OUT/pytest.txt" 2>&1
  echo "pytest rc=$?: $(grep -cE ' PASSED' "$OUT/pytest.txt") passed, $(grep -cE ' FAILED| ERROR' "$OUT/pytest.txt") failed/error"
  run_step "profile" 45 "$OUT/profile.txt" $PY bench/profile_decode_step.py
  run_step "gemv" 30 "$OUT/gemv.txt" $PY bench/tune_gemv.py --quick
  step done
} > "$OUT/final.txt" 2>&1
cat "$OUT/final.txt"
grep -E " FAILED| ERROR|PASSED" "$OUT/pytest_asm.txt" | cut -c1-150
grep -E " FAILED| ERROR" "$OUT/pytest.txt" | head -20
tail -1 "$OUT/pytest.txt"
grep '^|' "$OUT/decode_step.txt" | head -12
grep '^|' "$OUT/host_cost.md" | head -12
grep -v -i warn "$OUT/profile.txt" | head -80
grep -v -i warn "$OUT/fp8.txt" | cut -c1-120 | tail -14
grep '^|' "$OUT/gemv.txt"
