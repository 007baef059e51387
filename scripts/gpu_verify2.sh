#!/usr/bin/env bash
# Lent-GPU call after the eleventh pass's changes: the GPU tests not run since (PDL, the mended memory-stats and
# diagnostics tests, the benches' measure) and the rest of tests/gpu that call 2 of this pass did not cover, then
# the decode step at batch 1 and 8 (graphed and eager, no HF compile) twice.
#
#   OUT=DIR scripts/gpu_verify2.sh
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
run_step pytest 400 "$OUT/pytest.txt" $PY -m pytest -q -p no:cacheprovider -rs \
  "tests/gpu/test_paged_triton_gpu.py::test_programmatic_dependent_launch_is_bit_equal_eager_and_in_a_graph" \
  tests/gpu/test_cuda.py tests/gpu/test_paged_attention_gpu.py tests/gpu/test_attention_variants_gpu.py \
  tests/gpu/test_attention_fp8_gpu.py tests/gpu/test_forward_fast_gpu.py tests/gpu/test_head_major_gpu.py \
  tests/gpu/test_engine_kernels_gpu.py tests/gpu/test_rope_gpu.py tests/gpu/test_triton_launch_gpu.py
tail -25 "$OUT/pytest.txt"
for i in 1 2; do
  run_step "step $i" 120 "$OUT/step_$i.txt" $PY bench/bench_decode_step.py --hf-compile off --cases 1x1k 8x1k --json "$OUT/step_$i.json"
  grep -E "x 1k|1x1k|8x1k" "$OUT/step_$i.txt" | head -12
done
