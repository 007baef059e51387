#!/usr/bin/env bash
# Sixteenth pass, third call: the five paged Triton GPU tests that run 57's time limit cut off (its first 66 of 71
# passed): long splits of a mixed batch and the traced decode, at the merge width's default of 8; then the fp8
# bench rows with the copy ceiling the faster of its graph-replayed and event-timed copies. Limits add up to 260 s.
#
#   OUT=DIR scripts/gpu_s16c.sh
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
run_step pytest 200 "$OUT/pytest.txt" $PY -m pytest -v -p no:cacheprovider \
  "tests/gpu/test_paged_triton_gpu.py::test_long_splits_of_a_mixed_batch_match_the_reference_and_replay_bit_equal" \
  "tests/gpu/test_paged_triton_gpu.py::test_traced_decode_equals_the_plain_launch_and_records_ordered_times"
grep -E "PASSED|FAILED|ERROR|passed|failed" "$OUT/pytest.txt" | tail -8
run_step "bench rows" 60 "$OUT/rows.txt" $PY -m pytest -v -s -p no:cacheprovider \
  tests/gpu/test_attention_fp8_gpu.py::test_fp8_decode_bench_rows
grep -E "us,|PASSED|FAILED|passed|failed" "$OUT/rows.txt" | tail -6
