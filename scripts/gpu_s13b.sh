#!/usr/bin/env bash
# Thirteenth pass, second call: the attention host cost, then the GPU tests not run with the twelfth pass's kernel (every test of
# test_paged_triton_gpu.py but the long- and forced-split ones, which passed in run 49, then the other files but the
# decode-graph and fused-decode ones, which passed there too), verbose so that a cut run still says what passed.
#
#   OUT=DIR [SECS=480] scripts/gpu_s13b.sh
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
run_step "attention host cost" 50 "$OUT/host.txt" \
  $PY -m sagellm_backend bench --provider cuda --only "attention host cost" --report "$OUT/host.md"
grep "^| attention" "$OUT/host.md"
g=tests/gpu
run_step pytest "${SECS:-480}" "$OUT/pytest.txt" $PY -m pytest -v -p no:cacheprovider -rs --durations=12 \
  --deselect "$g/test_paged_triton_gpu.py::test_long_splits_of_a_mixed_batch_match_the_reference_and_replay_bit_equal" \
  --deselect "$g/test_paged_triton_gpu.py::test_decode_forced_splits" \
  $g/test_paged_triton_gpu.py $g/test_attention_fp8_gpu.py $g/test_head_major_gpu.py $g/test_forward_fast_gpu.py \
  $g/test_attention_variants_gpu.py $g/test_pool_fp8_gpu.py $g/test_paged_attention_gpu.py $g/test_paged_dense_gpu.py \
  $g/test_engine_kernels_gpu.py $g/test_rope_gpu.py $g/test_triton_launch_gpu.py $g/test_cuda.py \
  $g/test_bench_decode_step_gpu.py
grep -cE " PASSED" "$OUT/pytest.txt"; grep -E "FAILED|ERROR" "$OUT/pytest.txt" | head -20; tail -22 "$OUT/pytest.txt"
