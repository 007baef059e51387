#!/usr/bin/env bash
# The shortest lent-GPU call of the eleventh pass: decode time against the split count on mixed lengths
# (bench/probe_long_splits.py, its forced split counts), then the PDL equality test (eager and graph-replayed), the two mended GPU tests
# (memory stats, dense-prefill diagnostics) and forward's fast path.
#
#   OUT=DIR scripts/gpu_verify3.sh
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
run_step "mixed split" 100 "$OUT/mixed.txt" $PY bench/probe_long_splits.py --json "$OUT/mixed.json" \
  --cases "64 mixed<=8k" 64x8k 64x1k 8x8k --points "2 splits" "3 splits" "4 splits" "6 splits"
cat "$OUT/mixed.txt"
run_step pytest 150 "$OUT/pytest.txt" $PY -m pytest -q -p no:cacheprovider -rs \
  "tests/gpu/test_paged_triton_gpu.py::test_programmatic_dependent_launch_is_bit_equal_eager_and_in_a_graph" \
  tests/gpu/test_cuda.py tests/gpu/test_paged_attention_gpu.py tests/gpu/test_forward_fast_gpu.py
tail -25 "$OUT/pytest.txt"
