#!/usr/bin/env bash
# Lent-GPU call after the eleventh pass's changes: the GPU tests not run since the changes (PDL, the mended
# memory-stats and diagnostics tests, the benches' measure) and the rest of tests/gpu that run 45 did not cover; then
# the decode step at batch 1 and 8 (graphed and eager, no HF compile) and the decode kernel's split merge widths at
# 1k contexts (graph-replayed), as time allows.
#
#   OUT=DIR scripts/gpu_verify2.sh
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
run_step pytest 300 "$OUT/pytest.txt" $PY -m pytest -q -p no:cacheprovider -rs \
  "tests/gpu/test_paged_triton_gpu.py::test_programmatic_dependent_launch_is_bit_equal_eager_and_in_a_graph" \
  tests/gpu/test_cuda.py tests/gpu/test_paged_attention_gpu.py tests/gpu/test_attention_variants_gpu.py \
  tests/gpu/test_forward_fast_gpu.py tests/gpu/test_attention_fp8_gpu.py tests/gpu/test_head_major_gpu.py \
  tests/gpu/test_engine_kernels_gpu.py tests/gpu/test_rope_gpu.py tests/gpu/test_triton_launch_gpu.py
tail -25 "$OUT/pytest.txt"
run_step step 100 "$OUT/step.txt" $PY bench/bench_decode_step.py --hf-compile off --cases 1x1k 8x1k --json "$OUT/step.json"
tail -14 "$OUT/step.txt"
run_step "merge sweep" 90 "$OUT/chunk.txt" $PY bench/tune_decode_chunk.py --skip-fp8 --cases 1x1024,8x1024 --json "$OUT/chunk.json"
cat "$OUT/chunk.txt"
