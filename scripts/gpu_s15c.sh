#!/usr/bin/env bash
# Fifteenth pass, third call, after the merge width's default became 8: the paged Triton GPU tests, issue 22's
# targets in one run (attention host cost beside the decode-step table), the fp8 and sliding-window bench rows,
# then the traced launches at the new default. Limits add up to 520 s.
#
#   OUT=DIR scripts/gpu_s15c.sh
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
run_step pytest 150 "$OUT/pytest.txt" $PY -m pytest -q -p no:cacheprovider tests/gpu/test_paged_triton_gpu.py
tail -3 "$OUT/pytest.txt"
run_step "attention host cost" 50 "$OUT/host.txt" \
  $PY -m sagellm_backend bench --provider cuda --only "attention host cost" --report "$OUT/host.md"
grep "^| attention" "$OUT/host.md"
run_step "decode step" 200 "$OUT/step.txt" $PY bench/bench_decode_step.py --json "$OUT/step.json" \
  --time-budget 70
grep -E "^\|" "$OUT/step.txt"
run_step "bench rows" 70 "$OUT/rows.txt" $PY -m pytest -v -s -p no:cacheprovider \
  tests/gpu/test_attention_variants_gpu.py::test_sliding_window_decode_reads_only_the_window \
  tests/gpu/test_attention_fp8_gpu.py::test_fp8_decode_bench_rows
grep -E "us,|PASSED|FAILED|passed|failed" "$OUT/rows.txt" | tail -8
run_step "trace" 50 "$OUT/trace.txt" $PY bench/probe_decode_trace.py --json "$OUT/trace.json" \
  --cases fp8x4x32k bf16x4x32k bf16x1x1k bf16x8x1k --configs default merge_width=4 default
grep -E "^[a-z0-9]+x" "$OUT/trace.txt"
rm -f "$OUT/host.txt"  # a call returns a few files only
