#!/usr/bin/env bash
# Long splits (DecodeConfig.long_splits), first call: the kernel alone over mixed and equal lengths
# (bench/probe_long_splits.py), then the decode GPU tests, the new long-split test first.
#
#   OUT=DIR scripts/gpu_long.sh
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
run_step "long splits probe" 220 "$OUT/long.txt" $PY bench/probe_long_splits.py --json "$OUT/long.json"
cat "$OUT/long.txt"
run_step pytest 300 "$OUT/pytest.txt" $PY -m pytest -q -p no:cacheprovider -rs \
  "tests/gpu/test_paged_triton_gpu.py::test_long_splits_of_a_mixed_batch_match_the_reference_and_replay_bit_equal" \
  "tests/gpu/test_paged_triton_gpu.py::test_decode_forced_splits" tests/gpu/test_decode_graph_gpu.py \
  tests/gpu/test_fused_decode_gpu.py tests/gpu/test_paged_triton_gpu.py
tail -25 "$OUT/pytest.txt"
