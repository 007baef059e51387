#!/usr/bin/env bash
# Prepared for the next GPU call (thirteenth pass, not run): whether the long-split loss comes from a grid that
# outgrows one wave (bench/probe_wave_fit.py), then the bench rows that now time device work from CUDA-graph replays
# (the sliding-window and fp8 decode GPU tests print them; the window test failed in run 50 on eager timings).
#
#   OUT=DIR scripts/gpu_s14.sh
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
run_step "wave fit" 120 "$OUT/wave.txt" $PY bench/probe_wave_fit.py --json "$OUT/wave.json"
cat "$OUT/wave.txt"
run_step pytest 150 "$OUT/pytest.txt" $PY -m pytest -v -s -p no:cacheprovider -rs \
  tests/gpu/test_attention_variants_gpu.py::test_sliding_window_decode_reads_only_the_window \
  tests/gpu/test_attention_fp8_gpu.py::test_fp8_decode_bench_rows
grep -E "PASSED|FAILED|us,|passed|failed" "$OUT/pytest.txt" | tail -12
