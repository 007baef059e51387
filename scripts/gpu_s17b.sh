#!/usr/bin/env bash
# Seventeenth pass, on an H200 while no H100 was lent: the GPU tests of 64-token pages (each decode tile in one page,
# its number read once per tile) and the fp8 bench rows at 16-, 32- and 64-token pages (bench/probe_fp8_pages.py),
# for the page sizes' ratios on one machine. Limits add up to 320 s.
#
#   OUT=DIR scripts/gpu_s17b.sh
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
run_step pytest 100 "$OUT/pytest.txt" $PY -m pytest -v -p no:cacheprovider tests/gpu/test_one_page_tiles_gpu.py
grep -E "PASSED|FAILED|ERROR|passed|failed" "$OUT/pytest.txt" | tail -10
run_step "fp8 pages" 220 "$OUT/pages.txt" $PY bench/probe_fp8_pages.py --json "$OUT/pages.json"
tail -14 "$OUT/pages.txt"
