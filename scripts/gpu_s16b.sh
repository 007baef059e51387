#!/usr/bin/env bash
# Sixteenth pass, second call, after the HDN value pages were measured slower and reverted: the paged Triton GPU
# tests at the merge width's default of 8 (run 56 stopped them at its time limit), the head-major page tests, the
# fp8 bench rows (now timing token- and head-major pages in one run) and the attention host cost. Limits add up to
# 410 s.
#
#   OUT=DIR scripts/gpu_s16b.sh
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
run_step pytest 240 "$OUT/pytest.txt" $PY -m pytest -q -p no:cacheprovider tests/gpu/test_paged_triton_gpu.py
tail -3 "$OUT/pytest.txt"
run_step "head-major" 60 "$OUT/hm.txt" $PY -m pytest -q -p no:cacheprovider tests/gpu/test_head_major_gpu.py
tail -2 "$OUT/hm.txt"
run_step "bench rows" 60 "$OUT/rows.txt" $PY -m pytest -v -s -p no:cacheprovider \
  tests/gpu/test_attention_fp8_gpu.py::test_fp8_decode_bench_rows
grep -E "us,|PASSED|FAILED|passed|failed" "$OUT/rows.txt" | tail -6
run_step "attention host cost" 50 "$OUT/host.txt" \
  $PY -m sagellm_backend bench --provider cuda --only "attention host cost" --report "$OUT/host.md"
grep "^| attention" "$OUT/host.md"
rm -f "$OUT/host.txt"
