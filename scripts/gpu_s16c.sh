#!/usr/bin/env bash
# Sixteenth pass, third call: the five paged Triton GPU tests that run 57's time limit cut off (its first 66 of 71
# passed): long splits of a mixed batch and the traced decode, at the merge width's default of 8; then the
# attention host cost again. Limits add up to 250 s.
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
# Run 57's batch-64 host-cost row was twice its batch-8 row (run 53's: 1.15x); the same bench again.
run_step "attention host cost" 50 "$OUT/host.txt" \
  $PY -m sagellm_backend bench --provider cuda --only "attention host cost" --report "$OUT/host.md"
grep "^| attention" "$OUT/host.md"
rm -f "$OUT/host.txt"
