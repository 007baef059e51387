#!/usr/bin/env bash
# Fifteenth pass, last call (little device time left): the paged Triton GPU tests at the merge width's new default
# (8), then the traced 4 x 32k and batch-1 launches at widths 8 and 4. Limits add up to 170 s.
#
#   OUT=DIR scripts/gpu_s15d.sh
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
run_step pytest 120 "$OUT/pytest.txt" $PY -m pytest -q -p no:cacheprovider tests/gpu/test_paged_triton_gpu.py
tail -3 "$OUT/pytest.txt"
run_step "trace" 50 "$OUT/trace.txt" $PY bench/probe_decode_trace.py --json "$OUT/trace.json" \
  --cases fp8x4x32k bf16x1x1k --configs default merge_width=4 default
grep -E "^[a-z0-9]+x" "$OUT/trace.txt"
