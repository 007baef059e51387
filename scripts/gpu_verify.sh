#!/usr/bin/env bash
# One lent-GPU call that verifies this round's defaults: the fp8 decode sweep (bf16 vs fp16 dots), the GPU tests
# of what changed (fp8 store bits, fused decode, graph replay, engine kernels and RoPE through direct launches),
# the end-to-end decode-step bench and the attention host cost. Outputs go to OUT.
#
#   scripts/gpu_verify.sh OUT [all|tests|bench]
# "tests" gives the GPU tests 500 s (run 19 needed about 300 s for most of these files); "bench" runs the sweep, the decode-step bench and the host
# cost; "all" (default) runs everything within one 10-minute call, the tests cut at 170 s.
set -u
OUT="${1:?usage: scripts/gpu_verify.sh OUT [all|tests|bench]}"
MODE="${2:-all}"
TEST_LIMIT=170
[ "$MODE" = tests ] && TEST_LIMIT=500
. "$(dirname "$0")/gpu_env.sh"
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  if [ "$MODE" != tests ]; then
  step "fp8 sweep"
  timeout 100 $PY bench/tune_fp8_window.py --no-window --out "$OUT" > "$OUT/fp8_sweep.txt" 2>&1
  echo "rc=$?"
  fi
  if [ "$MODE" != bench ]; then
  step "GPU tests"
  timeout $TEST_LIMIT $PY -m pytest -v -p no:cacheprovider -rs tests/gpu/test_attention_fp8_gpu.py tests/gpu/test_fused_decode_gpu.py \
    tests/gpu/test_decode_graph_gpu.py tests/gpu/test_engine_kernels_gpu.py tests/gpu/test_triton_launch_gpu.py \
    tests/gpu/test_rope_gpu.py tests/gpu/test_paged_triton_gpu.py tests/gpu/test_attention_variants_gpu.py > "$OUT/pytest.txt" 2>&1
  echo "pytest rc=$?: $(grep -cE 'PASSED' "$OUT/pytest.txt") passed, $(grep -cE 'FAILED|ERROR' "$OUT/pytest.txt") failed/error lines"
  fi
  if [ "$MODE" != tests ]; then
  step "decode-step bench"
  timeout 250 $PY bench/bench_decode_step.py --json "$OUT/decode_step.json" --plot "$OUT/decode_step.png" \
    --time-budget 90 > "$OUT/decode_step.txt" 2>&1
  echo "rc=$?"
  step "attention host cost"
  timeout 45 $PY -m sagellm_backend bench --provider cuda --only "attention host cost" --report "$OUT/host_cost.md" \
    > "$OUT/host_cost.txt" 2>&1
  echo "rc=$?"
  fi
  step done
} > "$OUT/verify.txt" 2>&1
cat "$OUT/verify.txt"
[ -f "$OUT/pytest.txt" ] && grep -E "FAILED|ERROR" "$OUT/pytest.txt" | head -20
[ -f "$OUT/fp8_sweep.txt" ] && grep -v -i warn "$OUT/fp8_sweep.txt" | cut -c1-110 | tail -40
[ -f "$OUT/decode_step.txt" ] && tail -25 "$OUT/decode_step.txt"
[ -f "$OUT/host_cost.md" ] && grep '^|' "$OUT/host_cost.md"
