#!/usr/bin/env bash
# Fifteenth pass, second call: the traced decode launches (bench/probe_decode_trace.py) with each span spread over its
# splits in whole pages (DecodeConfig.split_pages) and wider merges, beside the default, at 4 x 32k (fp8, bf16),
# 64 x 4k fp8 and batch 1 / 8 at 1k; then the GPU tests of forced splits (whole tiles and whole pages), the traced
# launch and long splits, and the fp8 bench rows. Limits add up to 400 s.
#
#   OUT=DIR scripts/gpu_s15b.sh
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
run_step "trace" 150 "$OUT/trace.txt" $PY bench/probe_decode_trace.py --json "$OUT/trace.json" --raw "$OUT/raw" \
  --cases fp8x4x32k bf16x4x32k fp8x64x4k bf16x1x1k bf16x8x1k \
  --configs default split_pages=true merge_width=8 merge_width=20 split_pages=true,merge_width=8 default
grep -E "^[a-z0-9]+x|counted" "$OUT/trace.txt"
run_step pytest 150 "$OUT/pytest.txt" $PY -m pytest -q -p no:cacheprovider -k "forced_splits or traced or long_splits" \
  tests/gpu/test_paged_triton_gpu.py
tail -3 "$OUT/pytest.txt"
run_step "fp8 rows" 100 "$OUT/fp8rows.txt" $PY -m pytest -v -s -p no:cacheprovider \
  tests/gpu/test_attention_fp8_gpu.py::test_fp8_decode_bench_rows
grep -E "us,|PASSED|FAILED|passed|failed" "$OUT/fp8rows.txt" | tail -8
tar czf "$OUT/raw.tgz" -C "$OUT" raw && rm -r "$OUT/raw"  # one file: a call returns a few files only
