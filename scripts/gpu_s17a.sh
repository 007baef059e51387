#!/usr/bin/env bash
# Seventeenth pass, first call: the GPU tests of 64-token pages (each decode tile in one page, its number read once
# per tile), the fp8 bench rows at 16-, 32- and 64-token pages (bench/probe_fp8_pages.py), the attention host cost
# with every case's calls in the same rounds (not yet run on a GPU), and the decode-step table. Limits add up to 490 s.
#
#   OUT=DIR scripts/gpu_s17a.sh
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
run_step pytest 100 "$OUT/pytest.txt" $PY -m pytest -v -p no:cacheprovider tests/gpu/test_one_page_tiles_gpu.py
grep -E "PASSED|FAILED|ERROR|passed|failed" "$OUT/pytest.txt" | tail -10
run_step "fp8 pages" 150 "$OUT/pages.txt" $PY bench/probe_fp8_pages.py --rounds 1 --json "$OUT/pages.json"
tail -8 "$OUT/pages.txt"
run_step "attention host cost" 60 "$OUT/host.txt" \
  $PY -m sagellm_backend bench --provider cuda --only "attention host cost" --report "$OUT/host.md"
grep "^| attention" "$OUT/host.md"
rm -f "$OUT/host.txt"
run_step "decode step" 180 "$OUT/step.txt" $PY bench/bench_decode_step.py --json "$OUT/step.json" \
  --time-budget 60
grep -E "^\|" "$OUT/step.txt"
